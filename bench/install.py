"""Unattended install benchmark: ISO boot → installed host's console showing its management URL.

    .venv/bin/python bench/install.py

Side by side in one run (these machines are noisy): the plain ISO boot to its console (the baseline),
then the unattended install of the same ISO onto a blank 8 GiB disk, then the first boot of that disk.
Phases: ISO boot (QEMU start → the install starts), validate (answer found and checked), partition,
write (slot write + read-back), the rest of the install, and first boot (QEMU start → console ready
with the node healthy). The installer prints its own per-step seconds on the QUANTIX-INSTALL-DONE line.
Results: a markdown table on stdout and bench/results/install.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qx_build.paths import Release, read_version  # noqa: E402
from qx_build.qemu import GUEST_NIC, Machine  # noqa: E402

RESULTS = REPO / "bench" / "results"
ANSWER = f"""hostname = "bench1"
[network]
nic = "{GUEST_NIC}"
[install]
mode = "wipe"
root_password_hash = "{{hash}}"
after = "poweroff"
[install.disk]
by_id = "virtio-qx-target"
"""


def _clean(b: bytes) -> str:
    t = b.decode("utf-8", "replace")
    return re.sub(r"\x1b\[[0-9;?=]*[A-Za-z]|\x1b[()][A-Za-z0-9]", "", t).replace("\r", "")


class Run:
    def __init__(self, work: Path, **kw: object) -> None:
        self.log = work / "serial.log"
        self.m = Machine(work, serial_log=self.log, **kw)  # type: ignore[arg-type]
        self.m.prepare()
        self.log.write_bytes(b"")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(self.m.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def until(self, pattern: str, timeout: float = 1800) -> tuple[float, re.Match[str]]:
        rx = re.compile(pattern)
        while time.monotonic() - self.t0 < timeout:
            m = rx.search(_clean(self.log.read_bytes()))
            if m:
                return time.monotonic() - self.t0, m
            if self.p.poll() is not None:
                raise SystemExit(f"QEMU exited before /{pattern}/")
            time.sleep(0.5)
        raise SystemExit(f"/{pattern}/ not seen in {timeout} s")

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def main() -> None:
    rel = Release(read_version(), REPO / "build")
    pw = subprocess.run(["openssl", "passwd", "-6", "bench-password"], capture_output=True, text=True,
                        check=True).stdout.strip()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        base = Run(t / "iso", iso=rel.iso, memory_mb=3072)
        out["iso_boot_to_console_s"], _ = base.until(r"QUANTIX-CONSOLE-READY")
        base.stop()
        target = t / "target.raw"
        with target.open("wb") as f:
            f.truncate(8 * 1024**3)
        answer = t / "answer.toml"
        answer.write_text(ANSWER.replace("{hash}", pw))
        iso = t / "unattended.iso"
        subprocess.run([str(REPO / ".venv/bin/qx-install"), "iso", "--answer", str(answer), "--out", str(iso),
                        str(rel.iso)], check=True, stdout=subprocess.DEVNULL)
        inst = Run(t / "install", iso=iso, memory_mb=3072, drives=[(target, "raw", "qx-target")])
        out["install_started_s"], _ = inst.until(r"QUANTIX-INSTALL-ANSWER")
        done_s, m = inst.until(r"QUANTIX-INSTALL-DONE .*?after=poweroff ?(.*)")
        out["install_done_s"] = done_s
        for k, v in re.findall(r"(\S+)=([0-9.]+)", m.group(1)):
            out[f"step_{k}_s"] = float(v)
        inst.p.wait(timeout=600)
        first = Run(t / "first", memory_mb=2048, drives=[(target, "raw", "qx-target")])
        out["first_boot_to_console_s"], _ = first.until(r"QUANTIX-CONSOLE-READY")
        first.stop()
    out["total_iso_to_installed_console_s"] = out["install_done_s"] + out["first_boot_to_console_s"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "install.json").write_text(json.dumps({"version": rel.version, "accel": os.environ.get("ACCEL", "auto"),
                                                      "results": out}, indent=2) + "\n")
    print("| phase | seconds |\n|---|---:|")
    for k, v in out.items():
        print(f"| {k} | {v:.1f} |")


if __name__ == "__main__":
    main()
