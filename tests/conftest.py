"""Suite-wide collection rules (every directory's tests): e2e marks and the plan of the parallel run."""

from __future__ import annotations

from collections.abc import Generator

import pytest

QEMU_GROUP = "qemu"  # the xdist_group of every test that runs a QEMU guest on this host
# e2e files that boot no guest: they read the built release or build a second image, and run beside
# the guests on another worker (tests/test_suite_plan.py checks that they mention no guest).
E2E_WITHOUT_GUEST = ("tests/e2e/test_layout.py", "tests/e2e/test_repro.py")


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
    guest needs a core for minutes, and two guests at once on CI's two cores time out. Every other
    test file is a group of its own (as ``--dist loadfile``: module fixtures are made once), spread
    over the other workers while the guests boot. Without xdist the groups are inert; the QEMU group
    still runs first.

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
        group = QEMU_GROUP if boots_qemu(item) else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
    result = yield
    # Stable: file order is kept within each class. e2e before the libvirtd tests: the longest first.
    items.sort(key=lambda item: 0 if item.get_closest_marker("e2e") else 1 if boots_qemu(item) else 2)
    return result
