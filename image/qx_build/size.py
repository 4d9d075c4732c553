"""``make size``: what the release weighs and where the root's bytes go."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from qx_common import run as r
from qx_common.errors import UserError
from qx_build import pe
from qx_build.paths import Release, read_version

PAYLOAD_GOAL = 150 * 1000**2


def dir_sizes(root: Path, depth: int = 3) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        key = "/" + "/".join(rel.parts[:depth])
        total = sum((Path(dirpath) / f).lstat().st_size for f in files)
        sizes[key] = sizes.get(key, 0) + total
    return sizes


def report(build_dir: Path, top: int = 20) -> str:
    rel = Release(read_version(), build_dir)
    if not rel.manifest.exists():
        raise UserError(f"no build of {rel.version} in {build_dir} ({rel.manifest.name} missing)",
                        hint="run 'make image' first")
    m = json.loads(rel.manifest.read_text())
    lines = [f"Quantix OS {m['version']} — release sizes"]
    for name, a in m["artifacts"].items():
        extra = f" (uncompressed {a['uncompressed_size'] / 1024**2:.1f} MiB)" if "uncompressed_size" in a else ""
        lines.append(f"  {name:5} {a['file']:42} {a['size'] / 1024**2:9.1f} MiB{extra}")
    comp = m["artifacts"]["root"].get("compression", {"profile": "release", "level": 19})
    lines.insert(1, f"  build profile: {comp['profile']} (zstd -{comp['level']})"
                 + ("" if comp["profile"] == "release" else " — NOT a release build: payload sizes are larger"))
    payload = m["artifacts"]["root"]["size"] + m["artifacts"]["uki"]["size"]
    verdict = "within" if payload <= PAYLOAD_GOAL else "OVER"
    lines.append(f"  update payload (root + UKI): {payload / 1000**2:.1f} MB — {verdict} the 150 MB goal")
    lines.append("  UKI sections:")
    for s in pe.sections(rel.uki):
        lines.append(f"    {s.name:10} {s.virtual_size / 1024**2:8.1f} MiB")
    root_raw = build_dir / ".work" / "disk" / f"quantix-os_{m['version']}.root.raw"
    if root_raw.exists():
        with tempfile.TemporaryDirectory() as tmp:
            r.run(["fsck.erofs", f"--extract={tmp}/r", root_raw])
            sizes = dir_sizes(Path(tmp) / "r")
        lines.append(f"  largest directories of the root (files directly inside, top {top}):")
        for d, n in sorted(sizes.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"    {n / 1024**2:8.1f} MiB  {d}")
    return "\n".join(lines)
