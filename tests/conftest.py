"""Suite-wide collection rules (every directory's tests): e2e marks and the plan of the parallel run."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark e2e tests, and plan the parallel run of ``make test`` (pytest-xdist, ``--dist loadgroup``).

    The e2e scenarios are one group, run first and in order on one worker: each boots QEMU under TCG
    for minutes, and two guests at once would only fight over the two cores. Every other test file is
    a group of its own (as ``--dist loadfile``: module fixtures are made once), spread over the other
    workers while the guests boot. Without xdist the groups are inert; e2e still runs first.
    """
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.xdist_group("e2e"))
        else:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
    items.sort(key=lambda item: 0 if item.get_closest_marker("e2e") else 1)  # stable: file order kept
