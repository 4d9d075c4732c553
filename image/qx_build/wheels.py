"""The wheelhouse the image installs our Python code from (hash-checked, offline at build time).

Third-party wheels are downloaded for the image's Python (trixie: CPython 3.13, manylinux x86-64)
strictly from ``image/requirements-image.lock`` (``--require-hashes``); our own code is built as a
wheel from the checkout with SOURCE_DATE_EPOCH set, so it is the same bytes every build.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_build.paths import REPO

IMAGE_PYTHON = "3.13"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def prepare(wheel_dir: Path, source_date_epoch: str) -> None:
    log.step("wheels: our code and the locked dependencies for the image's Python " + IMAGE_PYTHON)
    for old in wheel_dir.glob("quantix_os-*.whl"):
        old.unlink()
    wheel_dir.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    r.run([*pip, "download", "-q", "--only-binary=:all:", *platform_args, "--python-version", IMAGE_PYTHON,
           "--implementation", "cp", "--require-hashes", "-r", REPO / "image/requirements-image.lock",
           "-d", wheel_dir], env={"SOURCE_DATE_EPOCH": source_date_epoch})
    r.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", wheel_dir, REPO],
          env={"SOURCE_DATE_EPOCH": source_date_epoch})
    # setuptools builds in <repo>/build/{lib,bdist.*}: not part of any release, remove it.
    for junk in [REPO / "build" / "lib", *(REPO / "build").glob("bdist.*")]:
        shutil.rmtree(junk, ignore_errors=True)
