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
sys.path[:0] = [str(REPO), str(REPO / "updates"), str(REPO / "common")]

from tests.updates.conftest import make_host  # noqa: E402
from tests.updates.httpserver import serve  # noqa: E402
from tests.updates.tufrepo import TufRepo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--phases", action="store_true", help="print qx-update's per-phase rates (its stderr)")
    args = ap.parse_args()
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
