"""The wheelhouse the image installs our Python code from (hash-checked, offline at build time).

Third-party wheels are downloaded for the image's Python (trixie: CPython 3.13, manylinux x86-64)
strictly from ``image/requirements-image.lock`` (``--require-hashes``), and not again while the lock is
the one they were downloaded for (:data:`_STAMP`; the image's pip checks every hash again when it installs
them); our own code is built as a wheel from the checkout with SOURCE_DATE_EPOCH set, so it is the same
bytes every build.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_common.errors import ExternalError
from qx_build.paths import REPO

IMAGE_PYTHON = "3.13"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


_STAMP = ".downloaded-for"  # in the wheel directory: the sha256 of the lock and the files it gave


def _stamp(wheel_dir: Path, lock: Path) -> str:
    names = sorted(p.name for p in wheel_dir.glob("*.whl") if not p.name.startswith("quantix_os-"))
    return hashlib.sha256(lock.read_bytes()).hexdigest() + "\n" + "\n".join(names) + "\n"


def prepare(wheel_dir: Path, source_date_epoch: str) -> None:
    log.step("wheels: our code and the locked dependencies for the image's Python " + IMAGE_PYTHON)
    for old in wheel_dir.glob("quantix_os-*.whl"):
        old.unlink()
    wheel_dir.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    lock = REPO / "image/requirements-image.lock"
    stamp = wheel_dir / _STAMP
    if not (stamp.is_file() and stamp.read_text() == _stamp(wheel_dir, lock)):
        stamp.unlink(missing_ok=True)
        platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
        r.run([*pip, "download", "-q", "--only-binary=:all:", *platform_args, "--python-version", IMAGE_PYTHON,
               "--implementation", "cp", "--require-hashes", "-r", lock,
               "-d", wheel_dir], env={"SOURCE_DATE_EPOCH": source_date_epoch})
        stamp.write_text(_stamp(wheel_dir, lock))
    r.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheel_dir, REPO],
          env={"SOURCE_DATE_EPOCH": source_date_epoch})
    # setuptools builds in <repo>/build/{lib,bdist.*}: not part of any release, remove it.
    for junk in [REPO / "build" / "lib", *(REPO / "build").glob("bdist.*")]:
        shutil.rmtree(junk, ignore_errors=True)


def ours(wheel_dir: Path) -> Path:
    """Our own wheel in ``wheel_dir`` (made by :func:`prepare`)."""
    found = sorted(wheel_dir.glob("quantix_os-*.whl"))
    if len(found) != 1:
        raise ExternalError(f"{wheel_dir}: expected one quantix_os wheel, found {len(found)}",
                            hint="run make image again (qx_build.wheels.prepare makes it)")
    return found[0]
