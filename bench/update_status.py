"""qx-update status (the typed UpdateStatus) beside the dict it replaced, in the same run.

    .venv/bin/python bench/update_status.py [--base REV] [--rounds 15] [--calls 300]

``status`` runs at every console refresh (``qx-update --json status``), and the boot units read the same
state. The baseline is the tree at REV (default: the commit before the release contract and the status
model, ``612815a``), exported with ``git archive`` into a temporary directory; the current tree is this
checkout. On one host made of files (tests/updates/conftest.make_host: ESP, two slot images, a state
with a pending update, a last check, a refused release and 50 history entries), alternating per round:

* CLI: the wall time of ``python -m qx_update --config … --json status`` (process start, imports,
  state and ESP read, JSON out) — what the console pays per refresh;
* in-process: ``Client(cfg).status()`` repeated CALLS times in one process (what the model adds);
* ``import qx_update_server.release_cli`` (qx-release's start: it reaches the contract, which the
  server now imports from the client package).

Prints a markdown table; saves bench/results/update-status.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "updates"), str(REPO / "common")]

from tests.updates.conftest import make_host  # noqa: E402
from tests.updates.tufrepo import TufRepo  # noqa: E402

IN_PROCESS = """
import sys, time
from qx_update import config
from qx_update.client import Client
cfg = config.load(__import__("pathlib").Path(sys.argv[1]))
c = Client(cfg, progress=False)
c.status()
t0 = time.perf_counter()
for _ in range(int(sys.argv[2])):
    c.status()
print((time.perf_counter() - t0) / int(sys.argv[2]))
"""


def env_for(tree: Path) -> dict[str, str]:
    dirs = [tree / d for d in ("updates", "common", "update_server", "services", "console", "image")] + [tree]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(d) for d in dirs)}


def wall(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="612815a", help="the baseline revision")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="qx-bench-status-") as tmp:
        t = Path(tmp)
        base = t / "base"
        base.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.base], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
        repo = TufRepo(t / "repo")
        host = make_host(t / "host", repo.root_bytes, "http://127.0.0.1:9/")
        host.write_config(secure_boot_paths=False)  # settings the baseline does not know (it refuses them)
        host.state_dir.mkdir(parents=True)
        at = "2026-12-01T00:00:00Z"
        (host.state_dir / "state.json").write_text(json.dumps({
            "format": 1, "security_epoch_floor": 1, "host_id": "",
            "last_check": {"at": at, "result": "available", "version": "1.2.0"},
            "last_error": {"at": at, "message": "an earlier error"},
            "pending": {"slot": "b", "version": "1.2.0", "security_epoch": 1, "from_slot": "a",
                        "from_version": "1.0.0", "at": at},
            "slots": {"b": {"version": "1.2.0", "security_epoch": 1, "at": at}},
            "gate": {}, "rollback": None, "last_checkin": {"at": at, "event": "check", "ok": True, "detail": "200"},
            "refused": {"1.1.0": {"reason": "libvirt: down", "at": at}},
            "history": [{"at": at, "event": "check", "n": i} for i in range(50)]}))
        trees = {"baseline": base, "current": REPO}
        cli: dict[str, list[float]] = {k: [] for k in trees}
        imp: dict[str, list[float]] = {k: [] for k in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                env = env_for(tree)
                cli[name].append(wall([sys.executable, "-m", "qx_update", "--config", str(host.config), "--json",
                                       "status"], env))
                imp[name].append(wall([sys.executable, "-c", "import qx_update_server.release_cli"], env))
        call = {name: float(subprocess.run([sys.executable, "-c", IN_PROCESS, str(host.config), str(args.calls)],
                                           env=env_for(tree), check=True, capture_output=True, text=True).stdout)
                for name, tree in trees.items()}
    med = {k: {"cli_s": statistics.median(cli[k]), "import_s": statistics.median(imp[k]), "call_s": call[k]}
           for k in trees}
    print(f"| measure (median of {args.rounds}; in-process: mean of {args.calls}) | baseline {args.base} | current |")
    print("|---|---|---|")
    print(f"| `qx-update --json status` wall | {med['baseline']['cli_s'] * 1000:.0f} ms | {med['current']['cli_s'] * 1000:.0f} ms |")
    print(f"| `Client.status()` in-process | {med['baseline']['call_s'] * 1e6:.0f} µs | {med['current']['call_s'] * 1e6:.0f} µs |")
    print(f"| `import qx_update_server.release_cli` (process wall) | {med['baseline']['import_s'] * 1000:.0f} ms | "
          f"{med['current']['import_s'] * 1000:.0f} ms |")
    out = REPO / "bench" / "results" / "update-status.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"base": args.base, "rounds": args.rounds, "calls": args.calls, "results": med},
                              indent=2) + "\n")


if __name__ == "__main__":
    main()
