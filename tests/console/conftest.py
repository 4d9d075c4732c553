"""Fixtures of the console tests: a temporary host root and (for root tests) a network namespace pair."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qx_console import shadow


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def hostroot(tmp_path: Path) -> Path:
    """A minimal host tree: /etc/shadow with root's password 'quantix-pw', config dirs, /proc bits."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "var/lib/quantix/config/network").mkdir(parents=True)
    (root / "etc/shadow").write_text(
        f"root:{shadow.hash_password('quantix-pw')}:20000:0:99999:7:::\n"
        "daemon:*:20000:0:99999:7:::\n")
    os.chmod(root / "etc/shadow", 0o640)
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/cmdline").write_text("root=PARTLABEL=root-a ro console=ttyS0\n")
    (root / "proc/uptime").write_text("3725.5 100.0\n")
    (root / "proc/meminfo").write_text("MemTotal: 2048000 kB\nMemAvailable: 1024000 kB\n")
    (root / "proc/sys/kernel/hostname").write_text("qx-test\n")
    (root / "efi/loader/entries").mkdir(parents=True)
    (root / "efi/loader/entries/quantix-a.conf").write_text("title Quantix OS\n")
    (root / "efi/loader/entries/quantix-b+3.conf").write_text("title Quantix OS\n")
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("NAME=\"Quantix OS\"\nIMAGE_ID=quantix-os\nIMAGE_VERSION=1.2.3\n")
    return root


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair: 'host' has mgmt0 (no address), 'gw' has 10.77.0.1/24 on gw0
    and also answers as DNS server 10.77.0.53. Deleted afterwards."""
    if os.geteuid() != 0:
        # A failure, not a skip: a skipped namespace test would hide that safe apply went unproven.
        pytest.fail("needs root for network namespaces (run as root, or deselect with -m 'not root')")
    tag = uuid.uuid4().hex[:6]
    host, gw = f"qxc-h-{tag}", f"qxc-g-{tag}"
    _ip("netns", "add", host)
    _ip("netns", "add", gw)
    try:
        _ip("link", "add", "mgmt0", "netns", host, "type", "veth", "peer", "name", "gw0", "netns", gw)
        _ip("-n", gw, "link", "set", "gw0", "up")
        _ip("-n", gw, "link", "set", "lo", "up")
        _ip("-n", gw, "addr", "add", "10.77.0.1/24", "dev", "gw0")
        _ip("-n", gw, "addr", "add", "10.77.0.53/24", "dev", "gw0")
        _ip("-n", host, "link", "set", "lo", "up")
        yield host, gw
    finally:
        subprocess.run(["ip", "netns", "del", host], capture_output=True)
        subprocess.run(["ip", "netns", "del", gw], capture_output=True)
