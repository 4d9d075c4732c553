"""Checks before a build writes anything: each failure is one line saying what to do."""

from __future__ import annotations

import os
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from qx_common import run as r
from qx_common.errors import EnvironmentError_

MIRROR_PROBE = "http://deb.debian.org/debian/dists/trixie/InRelease"
MIN_FREE_BYTES = 20 * 1024**3
MIN_MKOSI = (24, 3)

BUILD_TOOLS = ("mkosi", "systemd-repart", "sfdisk", "losetup", "xorriso", "mcopy", "zstd", "mkfs.erofs",
               "sbsign", "sbverify")


def require_root() -> None:
    if os.geteuid() != 0:
        raise EnvironmentError_("building the image needs root (mkosi, loop devices)", hint="run: sudo make image")


def require_tools(tools: tuple[str, ...] = BUILD_TOOLS) -> None:
    for tool in tools:
        r.require(tool)


def mkosi_version() -> tuple[int, ...]:
    out = r.run(["mkosi", "--version"]).stdout
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not m:
        raise EnvironmentError_(f"cannot tell the mkosi version from '{out.strip()}'")
    return (int(m.group(1)), int(m.group(2) or 0))


def require_mkosi() -> None:
    ver = mkosi_version()
    if ver < MIN_MKOSI:
        raise EnvironmentError_(
            f"mkosi {'.'.join(map(str, ver))} is too old (need {'.'.join(map(str, MIN_MKOSI))} or newer)",
            hint="make image installs it from bookworm-backports: run 'make host-deps'",
        )


def require_loop_device() -> None:
    if not Path("/dev/loop-control").exists():
        raise EnvironmentError_("no /dev/loop-control: this machine cannot attach loop devices",
                                hint="load the loop module (modprobe loop) or build in a VM that has it")
    try:
        r.run(["losetup", "--find"], timeout=10)
    except Exception as e:  # noqa: BLE001 - any failure here means the same thing to the operator
        raise EnvironmentError_("no free loop device", hint="detach unused ones: losetup -D") from e


def require_space(build_dir: Path) -> None:
    build_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(build_dir).free
    if free < MIN_FREE_BYTES:
        raise EnvironmentError_(
            f"only {free / 1024**3:.1f} GiB free under {build_dir} (need {MIN_FREE_BYTES / 1024**3:.0f} GiB)",
            hint="free some disk space, or 'make clean' to drop old builds",
        )


def require_mirror(url: str = MIRROR_PROBE, timeout: float = 15.0) -> None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):  # noqa: S310
            return
    except (urllib.error.URLError, OSError) as e:
        raise EnvironmentError_(
            f"the Debian mirror is unreachable ({url}: {getattr(e, 'reason', e)})",
            hint="check the network/proxy; builds need deb.debian.org (trixie) for packages",
        ) from e


def check_all(build_dir: Path, *, network: bool = True) -> None:
    require_root()
    require_tools()
    require_mkosi()
    require_loop_device()
    require_space(build_dir)
    if network:
        require_mirror()
