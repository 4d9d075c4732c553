"""Suite-wide collection rules (every directory's tests): e2e marks and the plan of the parallel run."""

from __future__ import annotations

from collections.abc import Generator

import pytest

QEMU_GROUP = "qemu"  # the xdist_group of every test that runs a QEMU guest on this host …
# … but these short scenarios: their own group, queued last, so the worker that ran the tests without a
# guest takes it when they are done, beside the long scenarios of the QEMU group (one guest mostly keeps
# one core busy: in a serial run the second core idled; tests/test_suite_plan.py checks the plan).
LATE_QEMU_GROUP = "qemu-late"
LATE_QEMU_FILES = ("tests/e2e/test_boot.py", "tests/e2e/test_secure_boot.py", "tests/e2e/test_verity.py")
# e2e files that boot no guest: they read the built release or build a second image, and run beside
# the guests on another worker (tests/test_suite_plan.py checks that they mention no guest).
E2E_WITHOUT_GUEST = ("tests/e2e/test_layout.py", "tests/e2e/test_repro.py", "tests/e2e/test_quick.py")


def boots_qemu(item: pytest.Item) -> bool:
    """True for a test that runs a QEMU guest on this host: the e2e scenarios (tests/e2e, but for
    :data:`E2E_WITHOUT_GUEST`) and the tests marked ``libvirtd`` (their own libvirtd + a TCG guest;
    each also refuses to start while another libvirtd runs, so two of them at once fail)."""
    path = item.nodeid.split("::", 1)[0]
    if path.startswith("tests/e2e/"):
        return path not in E2E_WITHOUT_GUEST
    return item.get_closest_marker("libvirtd") is not None


@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> Generator[None, None, None]:
    """Mark e2e tests, and plan the parallel run of ``make test`` (pytest-xdist, ``--dist loadgroup``).

    Every test that boots QEMU is in one group, run first and in order on one worker: under TCG a
    guest needs a core for minutes, and guests on both workers for the whole run made every boot
    twice as slow (no gain). Every other test file is a group of its own (as ``--dist loadfile``:
    module fixtures are made once), spread over the other workers while the guests boot; the short
    scenarios of :data:`LATE_QEMU_FILES` are one group queued after all of them, so a worker takes it
    when the tests without a guest are done (one guest beside the QEMU group's, near its end). Without
    xdist the groups are inert; the QEMU group still runs first, the late group last.

    Call order matters, hence a wrapper: the marks go on before every other implementation runs,
    because xdist's worker reads the ``xdist_group`` marks in its own ``pytest_collection_modifyitems``
    (it appends ``@<group>`` to each nodeid, which is all its scheduler groups by). Its plugin is
    registered after this initial conftest, so a plain implementation here would run after it: no
    test then had a group and e2e boots ran on both workers at once (tests/test_suite_plan.py). The
    sort runs after every implementation (pytest's own reordering included), so it is final.
    """
    for item in items:
        if item.nodeid.startswith("tests/e2e/"):
            item.add_marker(pytest.mark.e2e)
        item.add_marker(pytest.mark.xdist_group(_group(item)))
    result = yield
    # Stable: file order is kept within each class. e2e before the libvirtd tests: the longest first; the
    # late group after everything else.
    items.sort(key=_order)
    return result


def _group(item: pytest.Item) -> str:
    if not boots_qemu(item):
        return item.nodeid.split("::", 1)[0]
    return LATE_QEMU_GROUP if item.nodeid.split("::", 1)[0] in LATE_QEMU_FILES else QEMU_GROUP


def _order(item: pytest.Item) -> int:
    group = _group(item)
    if group == LATE_QEMU_GROUP:
        return 3
    if group == QEMU_GROUP:
        return 0 if item.get_closest_marker("e2e") else 1
    return 2
