"""qx-update's slot write (``slots.write_payload``: zstd -d stream, hash, fsync, read-back) through
``qx_common.run.spawn`` beside a baseline commit's version of the same function, in the same run.

    .venv/bin/python bench/spawn.py [--baseline 4997330] [--mib 256] [--rounds 3]

The baseline tree is ``git archive`` of that commit (before spawn existed: a hand-made Popen with stderr
on a pipe) unpacked into a temporary directory; nothing in the checkout changes. Each round runs both
versions, alternating, each in a fresh Python process that imports only its own tree, on the same zstd
payload (MIB of mixed random/repeated bytes) into the same slot file. Reported: the median wall time,
throughput of the slot size, and the child's peak RSS. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from qx_update import slots
payload, slot, size, sha = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
t = time.perf_counter()
slots.write_payload(payload, slot, slot_size=size, slot_sha256=sha, progress=False)
print(json.dumps({"s": time.perf_counter() - t, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _tree(commit: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit],
                             check=True, capture_output=True).stdout
    tar = into / "base.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into / "base", filter="data")
    return into / "base"


def _run(tree: Path, payload: Path, slot: Path, size: int, sha: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(tree / d) for d in ("updates", "common"))}
    env.pop("QX_DEBUG", None)
    out = subprocess.run([sys.executable, "-c", CHILD, str(payload), str(slot), str(size), sha],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default="4997330")
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="qx-bench-spawn-") as tmp:
        work = Path(tmp)
        base = _tree(args.baseline, work)
        # Half random (incompressible), half repeated: zstd has real work and the pipe carries full speed.
        chunk = os.urandom(1 << 20)
        raw = work / "slot.raw"
        with raw.open("wb") as f:
            for i in range(args.mib):
                f.write(os.urandom(1 << 20) if i % 2 else chunk)
        size = raw.stat().st_size
        sha = hashlib.sha256(raw.read_bytes()).hexdigest()
        payload = work / "root.zst"
        subprocess.run(["zstd", "-q", "-3", "-T0", str(raw), "-o", str(payload)], check=True)
        raw.unlink()
        slot = work / "slot-b.img"
        with slot.open("wb") as f:
            f.truncate(size)
        results: dict[str, list[dict[str, float]]] = {"baseline": [], "spawn": []}
        for _ in range(args.rounds):
            results["baseline"].append(_run(base, payload, slot, size, sha))
            results["spawn"].append(_run(REPO, payload, slot, size, sha))
    print(f"write_payload, {args.mib} MiB slot, {args.rounds} rounds (median; peak RSS max)\n")
    print("| version | time s | MiB/s | peak RSS MiB |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        t = statistics.median(r["s"] for r in runs)
        print(f"| {name} | {t:.2f} | {args.mib / t:.0f} | {max(r['rss_mib'] for r in runs):.0f} |")


if __name__ == "__main__":
    main()
