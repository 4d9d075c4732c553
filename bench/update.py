"""qx-update apply throughput beside `curl | zstd -d | dd` of the same payload, in the same run.

    .venv/bin/python bench/update.py [--mib 150] [--rounds 3]

A signed TUF repository (tests/updates/tufrepo.py) with one release whose slot image is MIB of random
bytes is served by a Range-capable HTTP server on 127.0.0.1. Each round alternates:

* qx-update: the real CLI, ``apply`` from a fresh state (metadata refresh, download to the cache, TUF
  length+hash verification, zstd stream into the slot file, fsync, read-back hash);
* raw: ``curl -s URL | zstd -dc | dd of=SLOT bs=4M conv=fsync`` — the same bytes into the same slot,
  with no verification at all;
* same passes in shell: what our security properties cost with the fastest tools — ``curl -o`` to a
  file + fsync (resume needs the payload on disk), ``openssl sha256 FILE`` (verify before any slot write),
  ``zstd -dc FILE | dd conv=fsync``, then ``dd iflag=direct | openssl sha256`` (read-back). What a
  verifying, resumable client pays with the fastest tools, one pass after the other (openssl, not
  coreutils sha256sum: that one has no SHA-NI and is ~5x slower here).

Also timed: ``check`` from an empty metadata cache (full refresh) and with a warm cache.
Prints a markdown table; saves bench/results/update-apply.json.

    .venv/bin/python bench/update.py --delta [--root build/quantix-os_<v>.root.erofs.zst] [--rounds 3]

Delta updates (docs/update-format.md §5) on the real root: the build's erofs is extracted
(``fsck.erofs --extract``), release N is that tree and N+1 the same tree with one library replaced by a
larger build of it (a one-package change), both made with ``mkfs.erofs`` and published by the update
server's repository code (chunk store + signed indexes), the UKI of N+1 differing in its version string.
Measured in one run: bytes fetched for N → N+1 (chunks + indexes, at the server) against the full payload;
a full chunked apply with no seed (an empty slot) against ``curl | zstd -d | dd conv=fsync`` of the full
payload into the same slot file, alternating; CPU time and peak RSS of the qx-update process (with its
zstd). Saves bench/results/update-delta.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "updates"), str(REPO / "common"), str(REPO / "update_server")]

from tests.updates.conftest import make_host  # noqa: E402
from tests.updates.httpserver import serve  # noqa: E402
from tests.updates.tufrepo import TufRepo  # noqa: E402


_WRAP = """import json, resource, subprocess, sys
p = subprocess.run(sys.argv[1:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("QXRUSAGE " + json.dumps([p.returncode, r.ru_utime + r.ru_stime, r.ru_maxrss]), file=sys.stderr)
"""


def _measured(host, *args: str) -> tuple[float, float, int, str]:  # type: ignore[no-untyped-def]
    """(wall s, CPU s, peak RSS KiB, stdout) of one qx-update run: measured by a wrapper process whose
    only child is qx-update (so its zstd counts, and nothing the bench ran before)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "updates"), str(REPO / "common"), str(REPO)])}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _WRAP, sys.executable, "-m", "qx_update", "--config",
                           str(host.config), *args], capture_output=True, text=True, env=env, timeout=1800)
    wall = time.monotonic() - t0
    line = [x for x in proc.stderr.splitlines() if x.startswith("QXRUSAGE ")][-1]
    rc, cpu, rss = json.loads(line.split(" ", 1)[1])
    if rc != 0:
        raise SystemExit(f"qx-update {' '.join(args)} failed: {proc.stdout[-1000:]} {proc.stderr[-2000:]}")
    return wall, cpu, rss, proc.stdout


def delta(args: argparse.Namespace) -> None:

    from qx_update_server import release
    from qx_update_server.repository import Repository
    from tests.updates.deltarepo import write_build

    work = Path(tempfile.mkdtemp(prefix="qxu-delta-", dir="/var/tmp"))
    try:
        tree = work / "tree"
        raw = work / "n.raw"
        subprocess.run(f"zstd -dcq {args.root} > {raw}", shell=True, check=True)
        subprocess.run(["fsck.erofs", f"--extract={tree}", str(raw)], check=True, capture_output=True)
        raw.unlink()
        # The one package: the largest shared library under usr/lib, rebuilt larger (4 KiB more code).
        libs = sorted((p for p in (tree / "usr/lib").rglob("*.so*") if p.is_file() and not p.is_symlink()),
                      key=lambda p: p.stat().st_size)
        lib = libs[len(libs) // 2]  # a median-size library: a typical package update
        mk = ["mkfs.erofs", "--quiet", "-T0", "-U2f8c4a3e-1b7d-4c55-9a10-6d2e8f0b7c11", "--all-root"]
        subprocess.run([*mk, str(work / "n.erofs"), str(tree)], check=True)
        old = lib.read_bytes()
        lib.write_bytes(old[: len(old) // 2] + os.urandom(4096) + old[len(old) // 2:])
        subprocess.run([*mk, str(work / "n1.erofs"), str(tree)], check=True)
        shutil.rmtree(tree)
        uki = Path(str(args.root).replace(".root.erofs.zst", ".efi")).read_bytes()
        uki1 = uki.replace(b"VERSION_ID=", b"VERSION_ID=9", 1)
        repo = Repository(work / "data")
        repo.init()
        t0 = time.monotonic()
        repo.publish(release.load([write_build(work / "b", "1.1.0", (work / "n.erofs").read_bytes(), uki)]),
                     channel="stable")
        publish_full = time.monotonic() - t0
        image_n = (work / "n.erofs").stat().st_size
        srv = serve(repo.repo_dir)
        payload_url = srv.url + "targets/1.1.0/" + next(p.name for p in (repo.targets_dir / "1.1.0").iterdir()
                                                         if p.name.endswith(".root.erofs.zst"))
        host = make_host(work / "host", repo.root_bytes(1), srv.url)
        for p in host.slots.values():
            with p.open("r+b") as f:
                f.truncate(image_n + (64 << 20))
        # Full chunked apply (no seed) vs curl | zstd -d | dd, alternating, into the same slot file.
        ours, rawt, cpu, rss = [], [], [], []
        for _ in range(args.rounds):
            shutil.rmtree(host.state_dir, ignore_errors=True)
            for p in (host.esp / "loader/entries").glob("quantix-b*"):
                p.unlink()
            with host.slots["b"].open("r+b") as f:  # no seed: the target holds nothing of the release
                f.write(bytes(1 << 20))
            wall, c, m, _ = _measured(host, "--json", "apply")
            ours.append(wall)
            cpu.append(c)
            rss.append(m)
            t0 = time.monotonic()
            subprocess.run(f"curl -s {payload_url} | zstd -dcq | dd of={host.slots['b']} bs=4M conv=fsync,notrunc "
                           "status=none", shell=True, check=True)
            rawt.append(time.monotonic() - t0)
        # N -> N+1 as a delta: the host runs N from slot B and writes slot A.
        t0 = time.monotonic()
        repo.publish(release.load([write_build(work / "b", "1.2.0", (work / "n1.erofs").read_bytes(), uki1)]),
                     channel="stable")
        publish_delta = time.monotonic() - t0
        full_payload = sum(p.stat().st_size for p in (repo.targets_dir / "1.2.0").iterdir()
                           if p.name.endswith((".root.erofs.zst", ".efi")))
        host.write_config(running="b")
        srv.requests.clear()
        delta_s, delta_cpu, delta_rss, stdout = _measured(host, "--json", "apply")
        res = json.loads(stdout.strip().splitlines()[-1])
        assert res["applied"]["version"] == "1.2.0", res
        fetched = {p: (repo.repo_dir / p.lstrip("/")).stat().st_size
                   for p, _, st in srv.requests if st == 200 and "/targets/" in p and (repo.repo_dir / p.lstrip("/")).is_file()}
        fetched_bytes = sum(fetched.values())
        index_bytes = sum(n for p, n in fetched.items() if p.endswith(".chunks.json"))
        srv.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mo, mr = statistics.median(ours), statistics.median(rawt)
    out = {"root_image_bytes": image_n, "changed_file": str(lib.relative_to(work / "tree")), "changed_file_bytes": len(old),
           "full_payload_bytes": full_payload, "delta_fetched_bytes": fetched_bytes, "delta_index_bytes": index_bytes,
           "delta_fraction": fetched_bytes / full_payload, "delta_apply_s": delta_s,
           "delta_cpu_s": delta_cpu, "delta_peak_rss_kib": delta_rss,
           "full_chunked_apply_s": ours, "raw_s": rawt, "ratio_raw_over_ours": mr / mo, "full_cpu_s": cpu,
           "peak_rss_kib": max(rss), "publish_first_s": publish_full, "publish_next_s": publish_delta,
           "rounds": args.rounds}
    print(f"| what | figure |\n|---|---|\n"
          f"| root image (erofs) | {image_n / 2**20:.0f} MiB; changed: {out['changed_file']} ({len(old) / 1024:.0f} KiB, +4 KiB) |\n"
          f"| full payload of N+1 (root.erofs.zst + UKI) | {full_payload / 1e6:.1f} MB |\n"
          f"| delta N → N+1 fetched (chunks + 2 indexes) | {fetched_bytes / 1e6:.2f} MB ({100 * fetched_bytes / full_payload:.2f} %; indexes {index_bytes / 1e3:.0f} kB) |\n"
          f"| delta apply (plan, fetch, one pass, read-back) | {delta_s:.1f} s, CPU {out['delta_cpu_s']:.1f} s |\n"
          f"| full chunked apply, no seed (median of {args.rounds}) | {mo:.1f} s ({image_n / 2**20 / mo:.0f} MiB/s), CPU {statistics.median(cpu):.1f} s |\n"
          f"| curl \\| zstd -d \\| dd conv=fsync, same payload and slot (median) | {mr:.1f} s ({image_n / 2**20 / mr:.0f} MiB/s) |\n"
          f"| ratio (raw time / qx-update time) | {mr / mo:.2f}× |\n"
          f"| peak RSS of qx-update (or its zstd) | {max(rss) / 1024:.0f} MiB |\n"
          f"| publish: first release / next (chunks shared) | {publish_full:.1f} s / {publish_delta:.1f} s |")
    (REPO / "bench/results/update-delta.json").write_text(json.dumps(out, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--phases", action="store_true", help="print qx-update's per-phase rates (its stderr)")
    ap.add_argument("--delta", action="store_true", help="delta updates on the real root (see the docstring)")
    ap.add_argument("--root", type=Path, default=None, help="the build's root payload (--delta)")
    args = ap.parse_args()
    if args.delta:
        if args.root is None:
            args.root = sorted(REPO.glob("build/quantix-os_*.root.erofs.zst"))[-1]
        delta(args)
        return
    size = args.mib * 1024 * 1024
    work = Path(tempfile.mkdtemp(prefix="qxu-bench-", dir="/var/tmp"))
    try:
        repo = TufRepo(work / "repo")
        rel = repo.add_release("1.1.0", slot_bytes=os.urandom(size), channels=["stable"])
        srv = serve(repo.base)
        url = srv.url + str(rel.root_file.relative_to(repo.base))
        host = make_host(work / "host", repo.root_bytes, srv.url)
        with host.slots["b"].open("r+b") as f:
            f.truncate(size + 16 * 1024 * 1024)
        ours, raw, passes = [], [], []
        dl = work / "dl.part"
        slot = host.slots["b"]
        for _ in range(args.rounds):
            shutil.rmtree(host.state_dir, ignore_errors=True)
            for p in (host.esp / "loader/entries").glob("quantix-b*"):
                p.unlink()
            t0 = time.monotonic()
            proc = host.run(*(() if args.phases else ("--json",)), "apply", timeout=600)
            ours.append(time.monotonic() - t0)
            if args.phases:
                print(proc.stderr.strip(), file=sys.stderr)
            t0 = time.monotonic()
            subprocess.run(f"curl -s {url} | zstd -dcq | dd of={host.slots['b']} bs=4M conv=fsync,notrunc status=none",
                           shell=True, check=True)
            raw.append(time.monotonic() - t0)
            t0 = time.monotonic()
            subprocess.run(f"curl -s -o {dl} {url} && sync {dl} && openssl sha256 {dl} >/dev/null && zstd -dcq {dl} "
                           f"| dd of={slot} bs=4M conv=fsync,notrunc status=none && "
                           f"dd if={slot} bs=4M iflag=direct,count_bytes count={size} status=none | openssl sha256 >/dev/null",
                           shell=True, check=True, executable="/bin/bash")
            passes.append(time.monotonic() - t0)
            dl.unlink()
        shutil.rmtree(host.state_dir, ignore_errors=True)
        cold = host.json("check")["metadata_refresh_s"]
        warm = host.json("check")["metadata_refresh_s"]
        srv.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mo, mr, mp = statistics.median(ours), statistics.median(raw), statistics.median(passes)
    res = {"payload_mib": args.mib, "rounds": args.rounds, "qx_update_s": ours, "raw_s": raw, "same_passes_shell_s": passes,
           "qx_update_mib_s": args.mib / mo, "raw_mib_s": args.mib / mr, "ratio": mr / mo, "ratio_same_passes": mp / mo,
           "metadata_refresh_cold_s": cold, "metadata_refresh_warm_s": warm}
    print(f"| what | median time | throughput |\n|---|---|---|\n"
          f"| qx-update apply (refresh + download + TUF verify + write + read-back) | {mo:.2f} s | {args.mib / mo:.0f} MiB/s |\n"
          f"| curl \\| zstd -d \\| dd (no verification) | {mr:.2f} s | {args.mib / mr:.0f} MiB/s |\n"
          f"| same passes in shell (curl -o + sync, openssl sha256, zstd -d \\| dd, O_DIRECT read-back \\| openssl sha256) | {mp:.2f} s | {args.mib / mp:.0f} MiB/s |\n"
          f"| ratio (qx-update / raw throughput) | | {mr / mo:.2f}× |\n"
          f"| ratio (qx-update / same passes in shell) | | {mp / mo:.2f}× |\n"
          f"| metadata refresh, empty cache / warm cache | {cold:.3f} s / {warm:.3f} s | |")
    out = REPO / "bench/results/update-apply.json"
    out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
