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

    .venv/bin/python bench/update.py --delta [--root build/quantix-os_<v>.root.erofs.zst] [--rounds 3] [--baseline REV]
                                     [--rates 0,100,20] [--paced-rounds 1]

Delta updates (docs/update-format.md §5) on the real root: the build's erofs is extracted
(``fsck.erofs --extract``), release N is that tree and N+1 the same tree with one library replaced by a
larger build of it (a one-package change), both made with ``mkfs.erofs`` and published by the update
server's repository code (chunk store + signed indexes), the UKI of N+1 differing in its version string.
The host runs N from slot B (with its kept index and N's UKI on the ESP) and writes N+1 into slot A. For
each link (``--rates``: 0 = loopback, else a token bucket of that many Mbit/s shared by all connections
of the test server, no added latency), rounds alternate, each from an empty slot A and a fresh state:
qx-update with no seed (the host's index and UKI hidden: the planner's full stream), qx-update as a
delta (the one-library change), and the raw baseline ``curl -o UKI && sync; curl ROOT | zstd -dc | dd
conv=fsync`` — the same payload (root + UKI) into the same slot file, with no verification. CPU time and
peak RSS of the qx-update process (with its zstd); bytes the delta fetched (at the server). Saves
bench/results/update-delta.json.
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


def _measured(host, *args: str, code: Path = REPO) -> tuple[float, float, int, str]:  # type: ignore[no-untyped-def]
    """(wall s, CPU s, peak RSS KiB, stdout) of one qx-update run: measured by a wrapper process whose
    only child is qx-update (so its zstd counts, and nothing the bench ran before). ``code``: the checkout
    whose qx-update runs (``--baseline``: a worktree of another commit)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code / "updates"), str(code / "common"), str(code)])}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _WRAP, sys.executable, "-m", "qx_update", "--config",
                           str(host.config), *args], capture_output=True, text=True, env=env, timeout=1800)
    wall = time.monotonic() - t0
    line = [x for x in proc.stderr.splitlines() if x.startswith("QXRUSAGE ")][-1]
    rc, cpu, rss = json.loads(line.split(" ", 1)[1])
    if rc != 0:
        raise SystemExit(f"qx-update {' '.join(args)} failed: {proc.stdout[-1000:]} {proc.stderr[-2000:]}")
    return wall, cpu, rss, proc.stdout


def _reset_slot(path: Path, size: int) -> None:
    """Zeros (sparse): the slot holds nothing of any release."""
    with path.open("r+b") as f:
        f.truncate(0)
        f.truncate(size)


def delta(args: argparse.Namespace) -> None:

    from qx_update_server import release
    from qx_update_server.repository import Repository
    from tests.updates.deltarepo import write_build
    from tests.updates.httpserver import Pacer

    work = Path(tempfile.mkdtemp(prefix="qxu-delta-", dir="/var/tmp"))
    base: Path | None = None
    try:
        if args.baseline:
            base = work / "baseline"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(base), args.baseline],
                           check=True)
        tree = work / "tree"
        raw = work / "n.raw"
        subprocess.run(f"zstd -dcq {args.root} > {raw}", shell=True, check=True)
        subprocess.run(["fsck.erofs", f"--extract={tree}", str(raw)], check=True, capture_output=True)
        raw.unlink()
        # The one package: a median-size shared library under usr/lib, rebuilt larger (4 KiB more code).
        libs = sorted((p for p in (tree / "usr/lib").rglob("*.so*") if p.is_file() and not p.is_symlink()),
                      key=lambda p: p.stat().st_size)
        lib = libs[len(libs) // 2]  # a median-size library: a typical package update
        mk = ["mkfs.erofs", "--quiet", "-T0", "-U2f8c4a3e-1b7d-4c55-9a10-6d2e8f0b7c11", "--all-root"]
        subprocess.run([*mk, str(work / "n.erofs"), str(tree)], check=True)
        old = lib.read_bytes()
        lib.write_bytes(old[: len(old) // 2] + os.urandom(4096) + old[len(old) // 2:])
        subprocess.run([*mk, str(work / "n1.erofs"), str(tree)], check=True)
        changed = str(lib.relative_to(tree))
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
        slot_size = image_n + (64 << 20)
        srv = serve(repo.repo_dir)
        # The delta host: applies N (1.0.0 in slot A → N in slot B, indexes kept), then runs N from slot B.
        dhost = make_host(work / "dhost", repo.root_bytes(1), srv.url)
        # The no-seed host: runs the factory 1.0.0 (no index anywhere) from slot A, writes slot B.
        fhost = make_host(work / "fhost", repo.root_bytes(1), srv.url)
        for h in (dhost, fhost):
            for p in h.slots.values():
                with p.open("r+b") as f:
                    f.truncate(slot_size)
        _measured(dhost, "--json", "apply")
        dhost.write_config(running="b")
        state_n = (dhost.state_dir / "state.json").read_bytes()
        t0 = time.monotonic()
        repo.publish(release.load([write_build(work / "b", "1.2.0", (work / "n1.erofs").read_bytes(), uki1)]),
                     channel="stable")
        publish_delta = time.monotonic() - t0
        files = {p.name: p for p in (repo.targets_dir / "1.2.0").iterdir()}
        root_name = next(n for n in files if n.endswith(".root.erofs.zst"))
        uki_name = next(n for n in files if n.endswith(".efi"))
        full_payload = files[root_name].stat().st_size + files[uki_name].stat().st_size
        root_url, uki_url = srv.url + f"targets/1.2.0/{root_name}", srv.url + f"targets/1.2.0/{uki_name}"
        dl = work / "uki.raw"

        def raw_cmd(slot: Path) -> str:
            return (f"curl -s -o {dl} {uki_url} && sync {dl} && "
                    f"curl -s {root_url} | zstd -dcq | dd of={slot} bs=4M conv=fsync,notrunc status=none")

        def fresh(kind: str) -> tuple[object, Path]:
            """Before a round: the target slot empty (zeros), no boot entry for it, nothing downloaded."""
            if kind.startswith("full"):
                h, t = fhost, "b"
                shutil.rmtree(h.state_dir, ignore_errors=True)
            else:
                h, t = dhost, "a"
                shutil.rmtree(h.state_dir / "downloads", ignore_errors=True)
                (h.state_dir / "chunk-index/a.root.json").unlink(missing_ok=True)
                (h.state_dir / "chunk-index/uki-1.2.0.json").unlink(missing_ok=True)
                (h.state_dir / "state.json").write_bytes(state_n)
            for p in (h.esp / "loader/entries").glob(f"quantix-{t}*"):
                p.unlink()
            (h.esp / "EFI/quantix/quantix-os_1.2.0.efi").unlink(missing_ok=True)
            _reset_slot(h.slots[t], slot_size)
            return h, h.slots[t]

        runs: dict[str, dict[str, object]] = {}
        for rate in args.rates:
            srv.pacer = Pacer(rate * 1e6) if rate else None
            rounds = args.rounds if not rate else args.paced_rounds
            kinds = ("full", "delta", *(("full_base", "delta_base") if base else ()))
            row: dict[str, list] = {f"{k}_{f}": [] for k in kinds for f in ("s", "cpu_s", "rss_kib", "msg")}
            row.update(delta_fetched=[], delta_base_fetched=[], raw_s=[])
            for _ in range(rounds):
                for kind in kinds:
                    host, _slot = fresh(kind)
                    srv.requests.clear()
                    wall, c, m, stdout = _measured(host, "--json", "apply",
                                                   code=base if kind.endswith("_base") and base else REPO)
                    res = json.loads(stdout.strip().splitlines()[-1])
                    assert res["applied"]["version"] == "1.2.0", res
                    row[f"{kind}_s"].append(wall)
                    row[f"{kind}_cpu_s"].append(c)
                    row[f"{kind}_rss_kib"].append(m)
                    row[f"{kind}_msg"].append(res["message"].split("; ", 1)[-1])
                    if kind.startswith("delta"):
                        row[f"{kind}_fetched"].append(sum(
                            (repo.repo_dir / p.lstrip("/")).stat().st_size for p, _, st in srv.requests
                            if st == 200 and "/targets/" in p and (repo.repo_dir / p.lstrip("/")).is_file()))
                if args.phases:  # one more no-seed apply in text mode: its per-phase times (stderr)
                    host, _slot = fresh("full")
                    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                        [str(REPO / "updates"), str(REPO / "common"), str(REPO)])}
                    t0 = time.monotonic()
                    p = subprocess.run([sys.executable, "-m", "qx_update", "--config", str(host.config), "apply"],
                                       capture_output=True, text=True, env=env, timeout=1800)
                    print(f"--- no-seed apply in text mode, {time.monotonic() - t0:.2f} s:\n"
                          + "\n".join(x for x in p.stderr.splitlines() if " in " in x or "plan:" in x))
                _host, slot = fresh("full")
                t0 = time.monotonic()
                subprocess.run(raw_cmd(slot), shell=True, check=True)
                row["raw_s"].append(time.monotonic() - t0)
                dl.unlink()
            runs[f"{rate} Mbit/s" if rate else "loopback"] = row
        srv.close()
    finally:
        if base is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    out = {"root_image_bytes": image_n, "changed_file": changed, "changed_file_bytes": len(old),
           "full_payload_bytes": full_payload, "runs": runs, "publish_first_s": publish_full,
           "publish_next_s": publish_delta, "rounds": args.rounds, "paced_rounds": args.paced_rounds,
           "baseline": args.baseline, "load_after": os.getloadavg()}
    print(f"root image {image_n / 2**20:.0f} MiB; changed {changed} ({len(old) / 1024:.0f} KiB, +4 KiB); "
          f"full payload of N+1 (root.erofs.zst + UKI) {full_payload / 1e6:.1f} MB\n")
    print("| link | raw: curl UKI + curl \\| zstd -d \\| dd conv=fsync | qx-update, no seed | ratio | "
          "qx-update, one-library delta (fetched) | ratio | rounds |\n|---|---|---|---|---|---|---|")
    def run_cell(row: dict[str, list], kind: str) -> str:
        """``median s (each round), CPU, peak RSS`` of one kind of qx-update run, and its ratio to raw."""
        xs = row[f"{kind}_s"]
        return (f"{med(xs):.2f} s ({', '.join(f'{x:.2f}' for x in xs)}), CPU {med(row[f'{kind}_cpu_s']):.1f} s, "
                f"RSS {max(row[f'{kind}_rss_kib']) / 1024:.0f} MiB | {med(row['raw_s']) / med(xs):.2f}×")

    for link, row in runs.items():
        raw = row["raw_s"]
        fetched = med(row["delta_fetched"])
        print(f"| {link} | {med(raw):.2f} s ({', '.join(f'{x:.2f}' for x in raw)}) | {run_cell(row, 'full')} "
              f"| {run_cell(row, 'delta')} ({fetched / 1e6:.1f} MB, {100 * fetched / full_payload:.1f} % fetched) "
              f"| {len(raw)} |")
    if base is not None:
        print(f"\nbaseline {args.baseline} (same rounds, interleaved):\n\n| link | no seed | ratio to raw | delta | "
              "ratio to raw |\n|---|---|---|---|---|")
        for link, row in runs.items():
            print(f"| {link} | {run_cell(row, 'full_base')} | {run_cell(row, 'delta_base')} |")
    print(f"\npaths: no seed: {runs[next(iter(runs))]['full_msg'][0]} / delta: {runs[next(iter(runs))]['delta_msg'][0]}")
    print(f"publish: first release / next (chunks shared) {publish_full:.1f} s / {publish_delta:.1f} s")
    (REPO / "bench/results/update-delta.json").write_text(json.dumps(out, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", default=None, help="--delta: also run qx-update as of this commit (a "
                    "git worktree), interleaved with ours in every round")
    ap.add_argument("--phases", action="store_true", help="print qx-update's per-phase rates (its stderr)")
    ap.add_argument("--delta", action="store_true", help="delta updates on the real root (see the docstring)")
    ap.add_argument("--root", type=Path, default=None, help="the build's root payload (--delta)")
    ap.add_argument("--rates", type=lambda v: [float(x) for x in v.split(",")], default=[0.0],
                    help="--delta: links to measure, Mbit/s, 0 = loopback unpaced (e.g. 0,100,20)")
    ap.add_argument("--paced-rounds", type=int, default=1, help="--delta: rounds on a paced link")
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
        if base is not None:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
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
