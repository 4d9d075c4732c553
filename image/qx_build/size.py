"""``make size``: what the release weighs, where the root's bytes go, and the update payload's limit.

An update downloads the root payload and the UKI; together they must stay within :data:`PAYLOAD_LIMIT`
(150 MB, decimal). ``make size`` measures the build (:func:`measure`), prints the report and fails
(:class:`OverLimit`, exit 1) when a release build is over the limit, naming what grew since the sizes
recorded in ``image/size-record.json`` — the last accepted build's artifacts, UKI sections and the
root's largest directories (``make size RECORD=1`` writes it). A development build (``FAST=1``,
zstd -3) is reported but not judged: its payload is larger by design.

Pure where it can be: :func:`compare` and :func:`render` take plain data; only :func:`measure` reads
the build (the manifest, the UKI's PE sections, and the root filesystem through ``fsck.erofs``).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qx_common import run as r
from qx_common.errors import UserError
from qx_build import artifacts, pe
from qx_build.paths import REPO, Release, read_version

PAYLOAD_LIMIT = 150 * 1000**2
RECORD = REPO / "image" / "size-record.json"
TOP_DIRS = 20
# A growth smaller than this is noise between builds (timestamps, compression); not named.
GROWTH_NOTED = 64 * 1024


class OverLimit(UserError):
    """The release's update payload is over :data:`PAYLOAD_LIMIT`."""


@dataclass
class Sizes:
    version: str
    profile: str                                                    # release | fast
    level: int                                                      # its zstd level
    artifacts: dict[str, int] = field(default_factory=dict)        # artifact -> bytes
    uncompressed_root: int = 0
    uki_sections: dict[str, int] = field(default_factory=dict)     # .linux, .initrd, …
    root_dirs: dict[str, int] = field(default_factory=dict)        # /usr/lib/... -> bytes of its files

    @property
    def payload(self) -> int:
        return self.artifacts["root"] + self.artifacts["uki"]


def dir_sizes(root: Path, depth: int = 3) -> dict[str, int]:
    """Bytes of the files directly inside each directory, grouped at ``depth`` levels below ``root``."""
    sizes: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        key = "/" + "/".join(rel.parts[:depth])
        total = sum((Path(dirpath) / f).lstat().st_size for f in files)
        sizes[key] = sizes.get(key, 0) + total
    return sizes


def measure(build_dir: Path) -> Sizes:
    rel = Release(read_version(), build_dir)
    if not rel.manifest.exists():
        raise UserError(f"no build of {rel.version} in {build_dir} ({rel.manifest.name} missing)",
                        hint="run 'make image' first")
    m = json.loads(rel.manifest.read_text())
    comp = m["artifacts"]["root"].get("compression", {"profile": "release", "level": 19})
    s = Sizes(version=m["version"], profile=comp["profile"], level=comp["level"],
              artifacts={name: a["size"] for name, a in m["artifacts"].items()},
              uncompressed_root=m["artifacts"]["root"].get("uncompressed_size", 0),
              uki_sections={sec.name: sec.virtual_size for sec in pe.sections(rel.uki)})
    # The root as published (mkosi's root.raw is older than the release after a quick rebuild: qx_build.quick).
    if rel.root_payload.exists():
        with tempfile.TemporaryDirectory(dir=build_dir / ".work" if (build_dir / ".work").is_dir() else None) as tmp:
            root = artifacts.decompress_root(rel.root_payload, Path(tmp) / "root.erofs")
            r.run(["fsck.erofs", f"--extract={tmp}/r", root])
            s.root_dirs = dir_sizes(Path(tmp) / "r")
    return s


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


def render(s: Sizes, top: int = TOP_DIRS) -> str:
    lines = [f"Quantix OS {s.version} — release sizes",
             f"  build profile: {s.profile} (zstd -{s.level})"
             + ("" if s.profile == "release" else " — NOT a release build: payload sizes are larger")]
    for name, n in s.artifacts.items():
        extra = f" (uncompressed {_mib(s.uncompressed_root)})" if name == "root" and s.uncompressed_root else ""
        lines.append(f"  {name:5} {_mib(n):>12}{extra}")
    verdict = "within" if s.payload <= PAYLOAD_LIMIT else "OVER"
    lines.append(f"  update payload (root + UKI): {s.payload / 1000**2:.1f} MB — {verdict} the "
                 f"{PAYLOAD_LIMIT // 1000**2} MB limit")
    lines.append("  UKI sections:")
    lines.extend(f"    {name:10} {_mib(n):>12}" for name, n in s.uki_sections.items())
    if s.root_dirs:
        lines.append(f"  largest directories of the root (files directly inside, top {top}):")
        for d, n in sorted(s.root_dirs.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"    {_mib(n):>12}  {d}")
    return "\n".join(lines)


def compare(now: Sizes, before: Sizes) -> list[str]:
    """What grew since ``before``, largest growth first: artifacts, UKI sections, root directories."""
    grew: list[tuple[int, str]] = []
    for kind, a, b in (("artifact", now.artifacts, before.artifacts), ("UKI section", now.uki_sections,
                                                                       before.uki_sections),
                       ("root directory", now.root_dirs, before.root_dirs)):
        for name, n in a.items():
            delta = n - b.get(name, 0)
            if delta >= GROWTH_NOTED:
                new = "" if name in b else " (new)"
                grew.append((delta, f"{kind} {name}: +{_mib(delta)} to {_mib(n)}{new}"))
    return [text for _, text in sorted(grew, key=lambda g: -g[0])]


def load_record(path: Path = RECORD) -> Sizes | None:
    """The recorded sizes, checked field by field (a hand-edited or truncated record is an error that
    names the field, never a traceback later)."""
    if not path.exists():
        return None
    hint = "write it again from a release build: make size RECORD=1"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a size record ({e})", hint=hint) from e
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a size record (a JSON object is expected)", hint=hint)
    want: dict[str, type] = {"version": str, "profile": str, "level": int, "artifacts": dict,
                             "uncompressed_root": int, "uki_sections": dict, "root_dirs": dict}
    unknown = sorted(set(data) - set(want))
    if unknown:
        raise UserError(f"{path}: unknown field {unknown[0]!r}", hint=hint)
    for name, tp in want.items():
        v = data.get(name)
        if not isinstance(v, tp) or isinstance(v, bool):
            raise UserError(f"{path}: {name}: missing or not a {tp.__name__}", hint=hint)
        if tp is dict and not all(isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                  for k, n in v.items()):
            raise UserError(f"{path}: {name}: every value must be a byte count", hint=hint)
    for artifact in ("root", "uki"):
        if artifact not in data["artifacts"]:
            raise UserError(f"{path}: artifacts.{artifact}: missing", hint=hint)
    return Sizes(**data)


def record(s: Sizes, path: Path = RECORD) -> None:
    if s.profile != "release":
        raise UserError(f"the build in this directory is a {s.profile} build: only a release build's sizes "
                        "are recorded", hint="make image (without FAST=1), then make size RECORD=1")
    if not s.root_dirs:
        raise UserError("the build has no root filesystem to measure (build/*.root.erofs.zst is missing): "
                        "every directory would later count as new", hint="make image, then make size RECORD=1")
    tmp = path.with_suffix(".json.part")
    tmp.write_text(json.dumps(asdict(s), indent=1, sort_keys=True) + "\n")
    tmp.rename(path)


def check(s: Sizes, before: Sizes | None) -> None:
    """Raise :class:`OverLimit` when a release build's payload is over the limit, naming what grew."""
    if s.profile != "release" or s.payload <= PAYLOAD_LIMIT:
        return
    over = s.payload - PAYLOAD_LIMIT
    if before is None:
        why = f"no size record to compare with ({RECORD.relative_to(REPO)} missing)"
    else:
        grew = compare(s, before)
        why = (f"since the recorded {before.version} ({before.payload / 1000**2:.1f} MB): "
               + ("; ".join(grew[:8]) if grew else "nothing grew by more than 64 KiB — it was over already"))
    raise OverLimit(f"the update payload (root + UKI) is {s.payload / 1000**2:.1f} MB, {over / 1000**2:.1f} MB "
                    f"over the {PAYLOAD_LIMIT // 1000**2} MB limit; {why}",
                    hint="the report above names the largest directories of the root; trim the image "
                         "(mkosi.conf RemoveFiles=, image/initrd/mkosi.conf) or record accepted sizes with "
                         "make size RECORD=1 (the limit still applies)")


def report(build_dir: Path, top: int = TOP_DIRS) -> str:
    return render(measure(build_dir), top)
