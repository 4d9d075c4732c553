"""The plan of the parallel run (tests/conftest.py) holds on the real suite under real pytest-xdist.

``make test TEST_WORKERS=2`` runs ``pytest -n 2`` with the Makefile's ``XDIST_PLAN`` options: every test
that boots QEMU must be in one xdist group, handed to one worker first, so that it runs them one after
another while the other worker runs the rest (two TCG guests at once on two cores time out). This runs
that command on this repository's tests with a recorder plugin that takes each test the scheduler hands
to a worker and writes down the worker and the nodeid instead of running it: the real collection, the
real conftest hooks and the real xdist scheduler, and no guest is booted. It costs two collections of
the whole suite (about 20 s of CPU), so that a new e2e-like test outside the group is caught here too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tests.conftest import E2E_WITHOUT_GUEST, LATE_QEMU_FILES

REPO = Path(__file__).resolve().parent.parent

# Registered with -p in the inner run (controller and workers). tryfirst + a non-None result: pytest's
# runner, which would run the test, is never called. The record is per worker (xdist sets the variable).
RECORDER = '''
import os
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    out = os.path.join(os.environ["QX_PLAN_DIR"], os.environ["PYTEST_XDIST_WORKER"] + ".txt")
    with open(out, "a", encoding="utf-8") as f:
        f.write(item.nodeid + "\\n")
    return True
'''


def xdist_plan() -> list[str]:
    """The xdist options of the Makefile's test target (``XDIST_PLAN := ...``), so that this runs what it runs."""
    m = re.search(r"^XDIST_PLAN :=(.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert m, "the Makefile has no 'XDIST_PLAN := ...' line (the test target's xdist options)"
    return shlex.split(m.group(1))


# Files whose tests boot QEMU outside tests/e2e (their own libvirtd + a TCG guest).
LIBVIRTD_FILES = ("tests/node/test_libvirtd.py", "tests/node/web/test_console_libvirtd.py")


def test_every_qemu_test_is_handed_to_one_worker_and_every_test_has_a_group(tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "qx_plan_recorder.py").write_text(RECORDER)
    record = tmp_path / "record"
    record.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(plugin_dir), QX_PLAN_DIR=str(record))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "qx_plan_recorder", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'basetemp'}", "-n", "2", *xdist_plan(), "-q", "tests"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    # Nothing runs, so pytest may say "no tests ran" (5); any other failure is the collection's.
    assert proc.returncode in (0, 5), proc.stdout[-3000:] + proc.stderr[-3000:]

    handed: dict[str, list[str]] = {w.stem: w.read_text().splitlines() for w in sorted(record.glob("*.txt"))}
    assert sorted(handed) == ["gw0", "gw1"], f"both workers must get tests: {sorted(handed)}"

    workers_of: dict[str, set[str]] = defaultdict(set)
    for worker, nodeids in handed.items():
        for nodeid in nodeids:
            assert "@" in nodeid, f"{nodeid} reached a worker without an xdist group (see tests/conftest.py)"
            path, group = nodeid.split("::", 1)[0], nodeid.rsplit("@", 1)[1]
            boots = (path.startswith("tests/e2e/") and path not in E2E_WITHOUT_GUEST) or path in LIBVIRTD_FILES
            want = ("qemu-late" if path in LATE_QEMU_FILES else "qemu") if boots else path
            assert group == want, f"{nodeid}: in group {group!r}, not {want!r}"
            workers_of[group].add(worker)

    qemu = [n for nodeids in handed.values() for n in nodeids if n.endswith("@qemu")]
    for must in ("tests/e2e/test_ota.py", "tests/e2e/test_install.py", *LIBVIRTD_FILES):
        assert any(n.startswith(must + "::") for n in qemu), f"no test of {must} was planned"
    assert len(workers_of["qemu"]) == 1, f"QEMU tests were handed to {sorted(workers_of['qemu'])} at once"
    # On that worker they come first and together, e2e before the libvirtd tests (tests/conftest.py).
    (worker,) = workers_of["qemu"]
    first = handed[worker][: len(qemu)]
    assert first == qemu and first[0].startswith("tests/e2e/") and first[-1].split("::")[0] in LIBVIRTD_FILES
    # The late group: one worker, handed after every test without a guest (the last unit of the queue).
    late = [n for nodeids in handed.values() for n in nodeids if n.endswith("@qemu-late")]
    for must in LATE_QEMU_FILES:
        assert any(n.startswith(must + "::") for n in late), f"no test of {must} was planned"
    assert len(workers_of["qemu-late"]) == 1, f"late QEMU tests went to {sorted(workers_of['qemu-late'])}"
    (late_worker,) = workers_of["qemu-late"]
    assert handed[late_worker][-len(late):] == late, "the late group must be the last a worker is handed"


def test_e2e_files_outside_the_qemu_group_boot_no_guest() -> None:
    # Every boot goes through tests/e2e/guest.py (BootedGuest, guest_factory) or qx_build.qemu.Machine.
    for path in E2E_WITHOUT_GUEST:
        source = (REPO / path).read_text()
        assert "guest" not in source.lower() and "Machine(" not in source, \
            f"{path} boots a guest: take it out of E2E_WITHOUT_GUEST in tests/conftest.py"
