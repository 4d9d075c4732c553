"""qx-update's artifact download with the per-download deadline, beside the tree before it, in one run.

    .venv/bin/python bench/download_deadline.py [--mib 256] [--rounds 5] [--baseline 612815a~1]

One random MIB-MiB file is served by the Range-capable test server (tests/updates/httpserver.py) on
127.0.0.1. Each round runs ``qx_update.download.fetch`` (fresh download: resumable cache, hashed as it
lands, signed length+hash check, fsync) in a new process, alternating (the order flipped every round) this checkout and ``git archive
BASELINE`` (default: the commit before the deadline), and reports the medians. What the deadline adds is
a timer thread per download and one ``watch`` per response, nothing per byte: the figures should match.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from tests.updates.httpserver import serve  # noqa: E402

CHILD = """
import sys, time
from pathlib import Path
from tuf.api.metadata import TargetFile
from qx_update import download
url, length, sha, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
info = TargetFile(length, {"sha256": sha}, "bench/payload.bin")
t = time.perf_counter()
download.fetch(info, url, dest, label="bench", progress=False)
print(time.perf_counter() - t)
"""


def _tree(commit: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "updates", "common"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _fetch(tree: Path, url: str, length: int, sha: str, dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(tree / d) for d in ("updates", "common"))}
    out = subprocess.run([sys.executable, "-c", CHILD, url, str(length), sha, str(dest)],
                         check=True, capture_output=True, text=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", default="612815a~1", help="git commit to compare with (before the deadline)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="qx-bench-deadline-") as tmp:
        work = Path(tmp)
        payload = work / "srv" / "bench" / "payload.bin"
        payload.parent.mkdir(parents=True)
        payload.write_bytes(os.urandom(args.mib << 20))
        sha = hashlib.sha256(payload.read_bytes()).hexdigest()
        # What the fetch asks for: <dir>/<sha256>.<name> (consistent snapshot), as qx-update does.
        served_name = payload.with_name(f"{sha}.payload.bin")
        payload.rename(served_name)
        srv = serve(work / "srv")
        url = f"{srv.url}/bench/{sha}.payload.bin"
        trees = {"baseline": _tree(args.baseline, work / "baseline"), "deadline": REPO}
        times: dict[str, list[float]] = {k: [] for k in trees}
        try:
            for r in range(args.rounds):
                # The order flips every round: whoever runs second finds the disk busy with the first's flush.
                for name, tree in (list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]):
                    times[name].append(_fetch(tree, url, args.mib << 20, sha, work / f"dl-{name}"))
        finally:
            srv.close()
    print(f"| tree | median s ({args.rounds} rounds, {args.mib} MiB) | MiB/s | all rounds |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {args.mib / med:.0f} | {' '.join(f'{t:.2f}' for t in ts)} |")


if __name__ == "__main__":
    main()
