"""Delta updates end to end: the real update server's repository publishes real erofs releases (chunk
store + signed chunk indexes), a static HTTP server on 127.0.0.1 serves them, and the real qx-update CLI
applies them to slot images — fetching only the chunks it lacks, refusing tampered ones, and resuming
after kill -9 (docs/update-format.md §5).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from qx_update.chunkindex import ChunkIndex, chunk_path
from qx_update.crashpoint import ENV
from qx_update_server import release
from qx_update_server.repository import Repository
from tests.updates.conftest import Host, make_host, sha
from tests.updates.deltarepo import erofs, make_tree, uki_bytes, write_build
from tests.updates.httpserver import Served, serve

SLOT = 24 << 20


@dataclass
class Rel:
    version: str
    image: bytes
    uki: bytes
    index: ChunkIndex
    uki_index: ChunkIndex


class Server:
    """The update server's repository on disk, served as static files (as nginx or a CDN would)."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.repo = Repository(base / "data")
        self.repo.init()
        self.http: Served = serve(self.repo.repo_dir)

    def publish(self, version: str, image: bytes, uki: bytes) -> Rel:
        build = write_build(self.base / "builds", version, image, uki)
        self.repo.publish(release.load([build]), channel="stable")
        vdir = self.repo.targets_dir / version
        idx = ChunkIndex.from_json(next(vdir.glob("*.root.chunks.json")).read_bytes())
        uidx = ChunkIndex.from_json(next(vdir.glob("*.efi.chunks.json")).read_bytes())
        return Rel(version, image, uki, idx, uidx)

    def chunk_file(self, sha256: str) -> Path:
        return self.repo.targets_dir / chunk_path(sha256)

    def fetched(self) -> list[str]:
        """Paths of the chunk files served (status 200) since the last clear."""
        return [p for p, _, status in self.http.requests if "/chunks/" in p and status == 200]

    def fetched_bytes(self) -> int:
        return sum((self.repo.repo_dir / p.lstrip("/")).stat().st_size for p in self.fetched())


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path / "server")
    yield s
    s.http.close()


@pytest.fixture
def images(tmp_path: Path) -> tuple[bytes, bytes]:
    """Release N and N+1: the same tree but for one file (a new version of one library)."""
    a = erofs(make_tree(tmp_path / "tree-n"), tmp_path / "n.erofs")
    b = erofs(make_tree(tmp_path / "tree-n1", changed={"usr/lib/d2/file014.bin": b"new library " * 9000}),
              tmp_path / "n1.erofs")
    assert a != b and len(a) < SLOT
    return a, b


@pytest.fixture
def dhost(tmp_path: Path, srv: Server) -> Host:
    host = make_host(tmp_path / "host", srv.repo.root_bytes(1), srv.http.url)
    for p in host.slots.values():
        with p.open("r+b") as f:
            f.truncate(SLOT)
    return host


def slot_holds(host: Host, slot: str, image: bytes) -> bool:
    with host.slots[slot].open("rb") as f:
        return f.read(len(image)) == image


def boot_into(host: Host, slot: str) -> None:
    """What the reboot into the new slot changes for qx-update: the running slot."""
    host.write_config(running=slot)


def expected_chunks(rel: Rel, *have: ChunkIndex) -> set[str]:
    known = {c.sha256 for idx in have for c in idx.chunks}
    return {"/targets/" + chunk_path(c.sha256) for idx in (rel.index, rel.uki_index) for c in idx.chunks
            if c.sha256 not in known}


def index_bytes(srv: Server, artifact: str) -> int:
    """Bytes of the signed chunk indexes of ``artifact`` (any release) the server sent."""
    suffix = ".root.chunks.json" if artifact == "root" else ".efi.chunks.json"
    return sum((srv.repo.repo_dir / p.lstrip("/")).stat().st_size for p, _, st in srv.http.requests
               if st == 200 and p.endswith(suffix))


def served_chunks(srv: Server) -> list[tuple[str, int]]:
    return [(p, (srv.repo.repo_dir / p.lstrip("/")).stat().st_size) for p in srv.fetched()]


def root_chunks(rel: Rel) -> set[str]:
    return {"/targets/" + chunk_path(c.sha256) for c in rel.index.chunks}


def full_targets(srv: Server, version: str) -> list[str]:
    """Request paths of the release's whole targets (root payload, UKI) the server answered."""
    return [p for p, _, st in srv.http.requests
            if st == 200 and f"/{version}/" in p and p.endswith((".root.erofs.zst", ".efi"))]


def test_first_apply_without_seeds_streams_the_whole_targets(dhost: Host, srv: Server, images) -> None:
    """Nothing of the release is on the host (the factory slot, 1.0.0, has no index anywhere): fetching
    every chunk would cost more than the whole target, so the planner takes the full stream — one GET per
    image, each chunk of the output verified against the signed index — not a request per chunk."""
    n = srv.publish("1.1.0", images[0], uki_bytes(1))
    proc = dhost.run("--json", "apply")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["applied"]["version"] == "1.1.0" and res["next_boot"] == "b", res
    assert "root by full-stream" in res["message"] and "uki by full-stream" in res["message"], res
    assert "slot: plan: full-stream" in proc.stderr and "uki: plan: full-stream" in proc.stderr, proc.stderr
    assert slot_holds(dhost, "b", n.image)
    assert srv.fetched() == [], "no chunk requests"
    got = full_targets(srv, "1.1.0")  # consistent snapshots: <sha256>.<name>
    assert len(got) == 2 and {p.rsplit(".", 1)[-1] for p in got} == {"zst", "efi"}, srv.http.requests
    # The result says how each image came: the whole stream, every byte of it and of its index fetched,
    # nothing reused.
    served = {p.rsplit(".", 1)[-1]: (srv.repo.repo_dir / p.lstrip("/")).stat().st_size for p in got}
    want = {"root": ("full-stream", served["zst"] + index_bytes(srv, "root"), 0, len(n.image)),
            "uki": ("full-stream", served["efi"] + index_bytes(srv, "uki"), 0, len(n.uki))}
    assert {t["image"]: (t["path"], t["fetched_bytes"], t["reused_bytes"], t["size"]) for t in res["transfer"]} == want
    assert (dhost.esp / "EFI/quantix/quantix-os_1.1.0.efi").read_bytes() == n.uki
    assert not list((dhost.state_dir / "downloads").iterdir()), "journals and indexes are cleaned up"


def test_delta_and_stream_write_bit_identical_slots(dhost: Host, srv: Server, images, tmp_path: Path) -> None:
    """The same release N+1 on two hosts: one runs N (most chunks here: the planner takes the delta), one
    has nothing (the full stream). Both slots hold exactly the signed image."""
    n = srv.publish("1.1.0", images[0], uki_bytes(1))
    dhost.json("apply")
    boot_into(dhost, "b")
    n1 = srv.publish("1.2.0", images[1], uki_bytes(1, patch=b"quantix.new=1"))
    fresh = make_host(tmp_path / "fresh", srv.repo.root_bytes(1), srv.http.url)
    with fresh.slots["b"].open("r+b") as f:
        f.truncate(SLOT)
    srv.http.requests.clear()
    res = dhost.json("apply")
    assert "root by delta" in res["message"] and "uki by delta" in res["message"], res
    assert full_targets(srv, "1.2.0") == [] and srv.fetched(), srv.http.requests
    srv.http.requests.clear()
    res = fresh.json("apply")
    assert "root by full-stream" in res["message"] and "uki by full-stream" in res["message"], res
    assert srv.fetched() == [] and len(full_targets(srv, "1.2.0")) == 2, srv.http.requests
    with dhost.slots["a"].open("rb") as a, fresh.slots["b"].open("rb") as b:
        assert a.read(len(n1.image)) == b.read(len(n1.image)) == n1.image
    assert slot_holds(dhost, "b", n.image), "the running slot is untouched"
    assert (dhost.esp / "EFI/quantix/quantix-os_1.2.0.efi").read_bytes() == n1.uki
    assert (fresh.esp / "EFI/quantix/quantix-os_1.2.0.efi").read_bytes() == n1.uki


def test_a_tampered_whole_target_is_refused_on_the_stream_path(dhost: Host, srv: Server, images) -> None:
    """The stream path decompresses an unverified payload, but writes only chunks that match the signed
    index: a payload changed on the server writes nothing of the changed part and is refused."""
    srv.publish("1.1.0", images[0], uki_bytes(1))
    payload = next((srv.repo.targets_dir / "1.1.0").glob("*.root.erofs.zst"))
    good = payload.read_bytes()
    payload.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=images[1], stdout=subprocess.PIPE,
                                       check=True).stdout)  # valid zstd, another image
    proc = dhost.run("apply", check=False)
    assert proc.returncode == 5, (proc.returncode, proc.stderr)
    assert "does not match the signed index" in proc.stderr, proc.stderr
    assert [e for e in dhost.entries() if e.endswith(".conf")] == ["quantix-a.conf"], dhost.entries()
    payload.write_bytes(good)
    assert dhost.json("apply")["applied"]["version"] == "1.1.0"
    assert slot_holds(dhost, "b", images[0])


def test_a_server_without_the_whole_target_gets_the_chunks(dhost: Host, srv: Server, images) -> None:
    """A mirror that serves the chunk store but not the whole payload (HTTP 404): the stream's GET is
    refused before anything is written, and the apply takes the chunks instead."""
    n = srv.publish("1.1.0", images[0], uki_bytes(1))
    for p in (srv.repo.targets_dir / "1.1.0").glob("*.root.erofs.zst"):
        p.unlink()
    proc = dhost.run("--json", "apply")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["applied"]["version"] == "1.1.0" and "root by delta" in res["message"], res
    assert "slot: plan: full-stream" in proc.stderr and "taking the chunks instead" in proc.stderr, proc.stderr
    assert slot_holds(dhost, "b", n.image)
    assert {"/targets/" + chunk_path(c.sha256) for c in n.index.chunks} <= set(srv.fetched())


def test_kill_9_during_the_stream_then_rerun_converges(dhost: Host, srv: Server, images) -> None:
    """Killed after the stream's first batch of the slot was written and journaled: the rerun finds
    those chunks in place (re-hashed), plans again for the rest, and the slot ends bit-identical."""
    n = srv.publish("1.1.0", images[0], uki_bytes(1))
    proc = dhost.run("apply", env={ENV: "stream-slot-1"}, check=False)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
    assert "slot: plan: full-stream" in proc.stderr, proc.stderr
    assert [e for e in dhost.entries() if e.endswith(".conf")] == ["quantix-a.conf"], dhost.entries()
    assert _journal_chunks(dhost, n.index), "the first batch is journaled"
    before = set(_journal_chunks(dhost, n.index))
    srv.http.requests.clear()
    proc = dhost.run("--json", "apply")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["applied"]["version"] == "1.1.0" and res["next_boot"] == "b", res
    assert slot_holds(dhost, "b", n.image)
    plan = next(line for line in proc.stderr.splitlines() if "slot: plan:" in line)
    assert " 0 % of the image is here" not in plan, plan
    assert not before & set(srv.fetched()), "a journaled chunk was fetched again"
    assert not list((dhost.state_dir / "downloads").iterdir())


def test_connections_the_server_closed_while_idle_are_replaced(dhost: Host, srv: Server, images) -> None:
    """Each kept-alive connection answers once; a second request on it is met by the server closing it
    without an answer (its keep-alive timer fired just then): the fetcher sends that GET again on a new one.
    (Seen in the OTA e2e: the guest's gaps between chunks outlasted uvicorn's 5 s keep-alive.)"""
    n = srv.publish("1.1.0", images[0], uki_bytes(1))
    dhost.json("apply")
    boot_into(dhost, "b")
    n1 = srv.publish("1.2.0", images[1], uki_bytes(1, patch=b"quantix.new=1"))
    srv.http.requests.clear()
    srv.http.drop_keepalive = True
    res = dhost.json("apply")
    assert res["applied"]["version"] == "1.2.0" and slot_holds(dhost, "a", n1.image), res
    want = expected_chunks(n1, n.index, n.uki_index)
    assert sorted(srv.fetched()) == sorted(want), "each chunk fetched once"
    assert srv.http.connections >= len(want), "one connection per chunk: every reuse failed"


def test_one_file_changed_fetches_only_the_changed_chunks(dhost: Host, srv: Server, images) -> None:
    n = srv.publish("1.1.0", images[0], uki_bytes(1))
    dhost.json("apply")
    boot_into(dhost, "b")
    n1 = srv.publish("1.2.0", images[1], uki_bytes(1, patch=b"quantix.new=1"))
    srv.http.requests.clear()
    res = dhost.json("apply")
    assert res["applied"]["version"] == "1.2.0" and res["slot"] == "a", res
    assert slot_holds(dhost, "a", n1.image), "the slot is bit-identical to the release's image"
    assert slot_holds(dhost, "b", n.image), "the running slot is untouched"
    assert (dhost.esp / "EFI/quantix/quantix-os_1.2.0.efi").read_bytes() == n1.uki
    # Exactly the chunks that N lacks (root and UKI), each once; never the full payload.
    want = expected_chunks(n1, n.index, n.uki_index)
    assert sorted(srv.fetched()) == sorted(want) and want
    full = sum(f.stat().st_size for f in (srv.repo.targets_dir / "1.2.0").glob("*.root.erofs.zst"))
    full += len(n1.uki)
    # On this small tree (48 files) a file that changes size moves every later file, whose erofs inodes
    # (their block addresses) then change too: a third of the image here. The real root's figure is in
    # docs/performance.md (bench/update.py).
    assert srv.fetched_bytes() < full / 2, (srv.fetched_bytes(), full)
    assert not [p for p, _, _ in srv.http.requests if p.endswith((".root.erofs.zst", ".efi"))]
    # The result reports the same: both images by delta, the bytes the server sent (chunks and the signed
    # indexes), the rest reused.
    t = {x["image"]: x for x in res["transfer"]}
    assert (t["root"]["path"], t["uki"]["path"]) == ("delta", "delta"), res["transfer"]
    assert t["root"]["fetched_bytes"] == sum(size for path, size in served_chunks(srv) if path in root_chunks(n1)) \
        + index_bytes(srv, "root"), res["transfer"]
    assert t["root"]["fetched_bytes"] + t["uki"]["fetched_bytes"] == \
        srv.fetched_bytes() + index_bytes(srv, "root") + index_bytes(srv, "uki"), res["transfer"]
    assert (t["root"]["size"], t["uki"]["size"]) == (len(n1.image), len(n1.uki)), res["transfer"]
    assert t["root"]["reused_bytes"] > 0 and t["uki"]["reused_bytes"] > 0, res["transfer"]


def _needed_chunk(n1: Rel, n: Rel) -> str:
    old = {c.sha256 for c in n.index.chunks}
    return next(c.sha256 for c in n1.index.chunks if c.sha256 not in old)


@pytest.mark.parametrize("attack", ["tampered-chunk", "chunk-of-another-release", "tampered-index", "truncated-chunk"])
def test_attacks_on_chunks_and_index_are_refused(dhost: Host, srv: Server, images, attack: str) -> None:
    n = srv.publish("1.1.0", images[0], uki_bytes(1))
    dhost.json("apply")
    boot_into(dhost, "b")
    n1 = srv.publish("1.2.0", images[1], uki_bytes(1))
    before = {"b": sha(dhost.slots["b"]), "entries": dhost.entries()}
    victim = srv.chunk_file(_needed_chunk(n1, n))
    if attack == "tampered-chunk":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 1
        victim.write_bytes(bytes(data))
    elif attack == "truncated-chunk":
        victim.write_bytes(victim.read_bytes()[:-1])
    elif attack == "chunk-of-another-release":
        # A valid frame of a real chunk of release N, served under the name of one N+1 needs.
        victim.write_bytes(srv.chunk_file(n.index.chunks[0].sha256).read_bytes())
    else:
        idx = next((srv.repo.targets_dir / "1.2.0").glob("*.root.chunks.json"))
        idx.write_bytes(idx.read_bytes().replace(n1.index.chunks[0].sha256.encode(),
                                                 n.index.chunks[0].sha256.encode(), 1))
    proc = dhost.run("apply", check=False)
    assert proc.returncode == 5, (proc.returncode, proc.stdout, proc.stderr)
    assert "tampered" in proc.stderr or "does not match" in proc.stderr, proc.stderr
    # The running slot and its boot entry are untouched; the refused release is not bootable.
    assert sha(dhost.slots["b"]) == before["b"]
    entries = dhost.entries()
    assert "quantix-b+3.conf" in entries and not [e for e in entries if e.startswith("quantix-a+")], entries
    if attack == "tampered-index":  # refused by TUF before anything was touched
        assert entries == before["entries"]


def _journal_chunks(host: Host, idx: ChunkIndex) -> set[str]:
    out: set[str] = set()
    for j in (host.state_dir / "downloads").glob("*.journal"):
        lines = j.read_text().split("\n")[1:-1]
        if j.name.startswith(idx.sha256):
            out |= {"/targets/" + chunk_path(idx.chunks[int(x)].sha256) for x in lines if x.isdigit()}
    return out


def test_kill_9_at_many_points_then_rerun_completes_without_refetching(dhost: Host, srv: Server, images) -> None:
    """N → N+1 as a delta; each run is killed after its 1st fetched chunk (QX_UPDATE_TEST_CRASH_AT=chunk-1)
    until a run has nothing left to fetch and completes."""
    n = srv.publish("1.1.0", images[0], uki_bytes(1))
    dhost.json("apply")
    boot_into(dhost, "b")
    n1 = srv.publish("1.2.0", images[1], uki_bytes(1, patch=b"quantix.new=1"))
    want = expected_chunks(n1, n.index, n.uki_index)
    total = len(want)
    kills = 0
    journaled: set[str] = set()
    requested: list[str] = []
    while True:
        srv.http.requests.clear()
        proc = dhost.run("apply", env={ENV: "chunk-1"}, check=False)
        got = srv.fetched()
        assert not journaled & set(got), "a chunk written before a kill was fetched again"
        assert full_targets(srv, "1.2.0") == [], "the delta stays a delta after a kill"
        requested += got
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)
        kills += 1
        assert kills <= total, "no progress between kills"
        journaled |= _journal_chunks(dhost, n1.index) | _journal_chunks(dhost, n1.uki_index)
        entries = dhost.entries()  # the running slot's entry stays; slot A gets no new (counting) entry
        assert "quantix-b+3.conf" in entries and not [e for e in entries if e.startswith("quantix-a+")], entries
    assert kills >= 2, (kills, total)  # each run also leaves up to WINDOW frames fetched ahead in the cache
    assert slot_holds(dhost, "a", n1.image) and slot_holds(dhost, "b", n.image)
    assert (dhost.esp / "EFI/quantix/quantix-os_1.2.0.efi").read_bytes() == n1.uki
    assert set(requested) == want
    # Fetched twice only the requests in flight when a kill came (frames fetched ahead of the writer
    # wait in the download cache).
    from qx_update.chunked import WORKERS

    assert len(requested) - total <= kills * WORKERS, (len(requested), total, kills)
    assert dhost.json("status")["slots"]["a"]["version"] == "1.2.0"


def test_offline_apply_from_the_repository_directory_uses_chunks(dhost: Host, srv: Server, images,
                                                                 tmp_path: Path) -> None:
    n = srv.publish("1.1.0", images[0], uki_bytes(1))
    copy = tmp_path / "usb"
    shutil.copytree(srv.repo.repo_dir, copy)
    res = dhost.json("apply", "--from", str(copy))
    assert res["applied"]["version"] == "1.1.0" and "delta: fetched" in res["message"], res
    assert slot_holds(dhost, "b", n.image)
    assert not srv.http.requests
    # A copy without the chunk store still carries the full payload: applied the old way.
    boot_into(dhost, "b")
    n1 = srv.publish("1.2.0", images[1], uki_bytes(2))
    shutil.rmtree(copy)
    shutil.copytree(srv.repo.repo_dir, copy, ignore=shutil.ignore_patterns("chunks"))
    res = dhost.json("apply", "--from", str(copy))
    assert res["applied"]["version"] == "1.2.0" and "delta" not in res["message"], res
    assert slot_holds(dhost, "a", n1.image)


def test_retention_keeps_chunks_a_kept_release_names(srv: Server, images) -> None:
    n = srv.publish("1.1.0", images[0], uki_bytes(1))
    n1 = srv.publish("1.2.0", images[1], uki_bytes(1))
    srv.repo.remove("1.1.0")
    import datetime as dt

    srv.repo.repair(now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=2))
    left = {p.name.removesuffix(".zst") for p in (srv.repo.targets_dir / "chunks").glob("*/*.zst")}
    assert left == {c.sha256 for idx in (n1.index, n1.uki_index) for c in idx.chunks}
    assert {c.sha256 for c in n.index.chunks} - left, "the chunks only 1.1.0 used are gone"
    assert hashlib.sha256(b"").hexdigest() not in left
