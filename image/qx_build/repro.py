"""``make repro-check``: build again from the same inputs and compare bit for bit.

Compared: the root slot's erofs filesystem bytes and the UKI. The second build runs with
``--incremental=no`` so package installation is redone (only downloaded .debs are reused). When
something differs, the report names it: the files inside the root that differ, or the UKI's PE
section (and, for the initrd, that it is the initrd) — the comparison itself is never weakened.

The UKI is signed for Secure Boot, and sbsign puts the signing time into each signature (the UKI's
and its kernel's): two signings never match. Both builds sign with the same key pair, and the UKIs
are compared with their signatures set aside (:func:`qx_build.pe.content_sha256`: every other byte,
headers included); the report says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_build import artifacts, erofs, mkosi, pe, sealing, wheels
from qx_build.hashing import sha256_file
from qx_build.paths import REPO, Release, read_mkosi_setting, read_version


@dataclass
class Comparison:
    name: str
    first: str
    second: str
    differences: list[str]

    @property
    def same(self) -> bool:
        return self.first == self.second


def _tree_digest(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            rel = "/" + str(p.relative_to(root))
            st = p.lstat()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() + f":{st.st_mode:o}:{st.st_mtime_ns}"
    return out


def diff_erofs(a: Path, b: Path, limit: int = 20) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        ta, tb = Path(tmp) / "a", Path(tmp) / "b"
        for img, dst in ((a, ta), (b, tb)):
            r.run(["fsck.erofs", f"--extract={dst}", img])
        da, db = _tree_digest(ta), _tree_digest(tb)
    diffs = sorted(k for k in da.keys() | db.keys() if da.get(k) != db.get(k))
    if not diffs:
        return ["(same files and contents: the difference is in erofs metadata layout)"]
    return diffs[:limit] + ([f"... and {len(diffs) - limit} more"] if len(diffs) > limit else [])


def diff_uki(a: Path, b: Path) -> list[str]:
    out = []
    names = [s.name for s in pe.sections(a)]
    for name in names:
        try:
            sa, sb = pe.read_section(a, name), pe.read_section(b, name)
            if sa[:2] == b"MZ" and sb[:2] == b"MZ":   # the embedded kernel: its own signature set aside
                sa, sb = pe.unsigned_view(sa), pe.unsigned_view(sb)
            if sa != sb:
                out.append(f"UKI section {name}" + (" (the initrd)" if name == ".initrd" else ""))
        except Exception as e:  # noqa: BLE001 - a missing section is itself the difference
            out.append(f"UKI section {name}: {e}")
    return out or ["(sections equal: the difference is in PE headers)"]


def compare(first_root: Path, first_uki: Path, second_root: Path, second_uki: Path) -> list[Comparison]:
    sa, sb = erofs.filesystem_size(first_root), erofs.filesystem_size(second_root)
    ha = sha256_file(first_root, limit=sa)
    hb = sha256_file(second_root, limit=sb)
    root_cmp = Comparison("root slot (erofs)", ha, hb, [] if ha == hb else diff_erofs(first_root, second_root))
    ua, ub = sha256_file(first_uki), sha256_file(second_uki)
    if ua != ub and pe.is_signed(first_uki) and pe.is_signed(second_uki):
        ua, ub = pe.content_sha256(first_uki), pe.content_sha256(second_uki)
        uki_cmp = Comparison("UKI (signatures aside)", ua, ub, [] if ua == ub else diff_uki(first_uki, second_uki))
    else:
        uki_cmp = Comparison("UKI", ua, ub, [] if ua == ub else diff_uki(first_uki, second_uki))
    return [root_cmp, uki_cmp]


def run(build_dir: Path) -> int:
    version = read_version()
    epoch = read_mkosi_setting("SourceDateEpoch")
    first = Release(version, build_dir)
    first_uki = first.uki
    if not first.root_payload.exists() or not first_uki.exists():
        from qx_common.errors import UserError

        raise UserError(f"no finished build of {version} in {build_dir}", hint="run 'make image' first")
    second_dir = build_dir / ".work" / "repro"
    # The first build's root as published (what hosts get): mkosi's own root.raw is older after a rebuild
    # that only replaced our Python code (qx_build.quick).
    first_root = artifacts.decompress_root(first.root_payload, build_dir / ".work" / "repro-first.root.erofs")
    wheels.prepare(build_dir / ".work" / "wheels", epoch)
    # The trust anchor the first build staged is reused as is (mkosi needs the directory either way).
    (build_dir / ".work" / "trust").mkdir(parents=True, exist_ok=True)
    # Signed like the first build (same pipeline); which key does not matter for the comparison.
    from qx_build import build

    signing = build.signing_keys(build.BuildOptions(build_dir=build_dir))
    # The first build's profile (its manifest): the UKI's initrds are compressed at that profile's level.
    manifest = json.loads(Release(version, build_dir).manifest.read_text())
    profile = manifest["artifacts"]["root"].get("compression", {}).get("profile", "release")
    mkosi.build("disk", version=version, output_dir=second_dir, source_date_epoch=epoch, incremental=False,
                extra=build.mkosi_args(signing, profile))
    # Sealed as the first build's UKI was: the second root's own root hash on its command line.
    second_root = second_dir / f"quantix-os_{version}.root.raw"
    fs_size = erofs.filesystem_size(second_root)
    tree = sealing.tree_of(second_root, fs_size, sha256_file(second_root, limit=fs_size, label="hashing root"))
    second_uki = second_dir / f"quantix-os_{version}.sealed.efi"
    sealing.seal_uki(second_dir / f"quantix-os_{version}.efi", second_uki, tree.roothash, signing)
    results = compare(first_root, first_uki, second_root, second_uki)
    ok = True
    for c in results:
        if c.same:
            print(f"REPRO-OK   {c.name}: sha256 {c.first}")
        else:
            ok = False
            print(f"REPRO-DIFF {c.name}: {c.first} != {c.second}")
            for d in c.differences:
                print(f"           differs: {d}")
    log.step("reproducible" if ok else "NOT reproducible")
    return 0 if ok else 1


__all__ = ["REPO", "run", "compare"]
