"""Running mkosi: one build, the ``disk`` variant (A/B GPT image).

The live system of the ISO is made from that build's tree (:mod:`qx_build.live`), not by a second run.
"""

from __future__ import annotations

import os
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_build.paths import REPO

VARIANTS = ("disk",)


def command(*, version: str, output_dir: Path, source_date_epoch: str, incremental: bool = True,
            force: bool = True, extra: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """mkosi's command line and the environment it gets (besides qx_common.run's clean one); what
    qx_build.quick fingerprints, so a change here is a change of the image's inputs."""
    argv: list[str] = ["mkosi", "--image-version", version, "--output-dir", str(output_dir)]
    if not incremental:
        argv += ["--incremental=no"]
    if force:
        argv += ["-f"]
    argv += extra or []
    argv += ["build"]
    return argv, {"SOURCE_DATE_EPOCH": source_date_epoch}


def build(variant: str, *, version: str, output_dir: Path, source_date_epoch: str,
          incremental: bool = True, force: bool = True, extra: list[str] | None = None) -> None:
    """Build one variant into ``output_dir`` (mkosi prints its own progress). ``extra``: settings that
    differ per build (the Secure Boot key pair: :func:`qx_build.secureboot.mkosi_args`)."""
    if variant not in VARIANTS:
        raise ValueError(variant)
    argv, env = command(version=version, output_dir=output_dir, source_date_epoch=source_date_epoch,
                        incremental=incremental, force=force, extra=extra)
    log.step(f"mkosi: building the {variant} variant (version {version})")
    output_dir.mkdir(parents=True, exist_ok=True)
    r.run(argv, capture=False, cwd=REPO, env={**env, "TERM": os.environ.get("TERM", "dumb")})
