"""Fixtures for e2e tests: the release built by `make image` (make test builds it first)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from qx_build.paths import REPO, Release, read_version
from tests.e2e import secureboot
from tests.e2e.guest import BootedGuest

BOOT_TIMEOUT = 900  # TCG boots take 2.5–4 min on CI machines; this bounds a hung boot


@pytest.fixture(scope="session")
def release() -> Release:
    rel = Release(read_version(), REPO / "build")
    missing = [f.name for f in rel.files() if not f.exists()]
    if missing:
        pytest.fail(f"build/ lacks {', '.join(missing)}: run 'make image' (make test does it first)")
    return rel


@pytest.fixture
def guest_factory(tmp_path: Path, release: Release) -> Iterator[type[BootedGuest]]:
    """``guest_factory(**BootedGuest args, secure_boot=False)``: a started guest; with ``secure_boot`` under
    the enforcing OVMF firmware trusting only the release's own certificate (tests/e2e/secureboot.py)."""
    guests: list[BootedGuest] = []

    def make(*, secure_boot: bool = False, **kw: object) -> BootedGuest:
        g = BootedGuest(tmp_path / f"guest{len(guests)}", **kw)  # type: ignore[arg-type]
        if secure_boot:
            g.machine.secure_boot_vars = secureboot.vars_trusting(release, tmp_path / f"sb{len(guests)}")
        guests.append(g)
        g.start()
        return g

    yield make  # type: ignore[misc]
    for g in guests:
        g.stop()
