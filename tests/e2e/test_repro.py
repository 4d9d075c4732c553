"""`make repro-check`: a second build from the same inputs gives a bit-identical root slot and UKI."""

from __future__ import annotations

import subprocess

from qx_build.paths import REPO, Release


def test_second_build_is_bit_identical(release: Release) -> None:
    proc = subprocess.run([str(REPO / ".venv/bin/qx-build"), "repro-check"], cwd=REPO, capture_output=True,
                          text=True, timeout=1500)
    report = [line for line in proc.stdout.splitlines() if line.startswith(("REPRO-", "  "))]
    assert proc.returncode == 0, "not reproducible:\n" + "\n".join(report) + "\n" + proc.stderr[-3000:]
    assert any(line.startswith("REPRO-OK   root slot (erofs)") for line in report)
    assert any(line.startswith("REPRO-OK   UKI") for line in report)
