"""A build's release files, read and verified (docs/update-format.md section 1).

Used on both sides: ``qx-release publish`` checks the files before uploading them, and the server
checks the uploaded copies again before anything is signed. A release is accepted only when the
manifest, ``SHA256SUMS`` and the bytes of every uploaded file agree; otherwise a :class:`UserError`
names the file and the field that disagree.

Uploaded files (the TUF targets plus their evidence): ``quantix-os_<v>.root.erofs.zst``,
``quantix-os_<v>.efi``, ``quantix-os_<v>.manifest.json`` and ``SHA256SUMS``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qx_common.errors import UserError

from qx_update_server import contract
from qx_update_server.contract import IMAGE_ID

SUMS = "SHA256SUMS"
CHUNK = 1 << 20
# Only these names may ever be uploaded: no directories, no dot files, nothing a path could escape with.
# fullmatch, not match + "$": "$" also matches before a trailing newline ("quantix-os_1.0.0.efi\n").
_NAME_RE = re.compile(r"SHA256SUMS|quantix-os_[0-9A-Za-z.~+-]{1,64}\.(?:root\.erofs\.zst|efi|manifest\.json)")


def upload_limit(name: str, max_upload: int) -> int:
    """The largest accepted size of release file ``name`` (already checked by :func:`check_filename`).

    The small files are parsed in memory, so they get small limits of their own."""
    if name == SUMS:
        return min(max_upload, contract.MAX_SUMS_BYTES)
    if name.endswith(".manifest.json"):
        return min(max_upload, contract.MAX_MANIFEST_BYTES)
    return max_upload


def check_filename(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or ".." in name:
        raise UserError(
            f"file name {name!r} is not a release file",
            hint="upload only quantix-os_<v>.root.erofs.zst, quantix-os_<v>.efi, "
                 "quantix-os_<v>.manifest.json and SHA256SUMS",
        )
    return name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def parse_sums(text: str) -> dict[str, str]:
    """``sha256sum`` format: ``<64 hex>  <name>`` (binary marker ``*`` allowed)."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m:
            raise UserError(f"SHA256SUMS line {n}: not '<sha256>  <file>'", hint="regenerate it with sha256sum")
        if m.group(2) in out and out[m.group(2)] != m.group(1):
            raise UserError(f"SHA256SUMS line {n}: {m.group(2)} is listed twice with different sums",
                            hint="regenerate it with sha256sum")
        out[m.group(2)] = m.group(1)
    return out


def _read_small(path: Path, limit: int, what: str) -> str:
    """A small text file, refused (not read) when over ``limit`` bytes."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise UserError(f"{path.name}: {size} bytes is over the limit of {limit} for {what}",
                            hint="publish the files qx-build wrote")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path.name}: not UTF-8 text ({e.reason} at byte {e.start})",
                        hint="publish the files qx-build wrote") from e
    except OSError as e:
        raise UserError(f"{path.name}: cannot read it: {e.strerror or e}") from e


@dataclass(frozen=True)
class Artifact:
    artifact: str  # "root" | "uki"
    path: Path
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Release:
    version: str
    security_epoch: int
    kernel_cmdline: str
    slot_size: int
    slot_sha256: str
    root: Artifact
    uki: Artifact
    manifest_path: Path
    sums_path: Path
    manifest: dict[str, Any]

    @property
    def upload_files(self) -> list[Path]:
        return [self.manifest_path, self.sums_path, self.uki.path, self.root.path]


def _field(d: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in d or not isinstance(d[key], typ) or isinstance(d[key], bool) and typ is int:
        raise UserError(f"{where}: field {key!r} is missing or not a {getattr(typ, '__name__', typ)}",
                        hint="the manifest must be the one qx-build wrote (docs/update-format.md section 1)")
    return d[key]


def find_manifest(files: list[Path]) -> Path:
    manifests = [f for f in files if f.name.endswith(".manifest.json")]
    if len(manifests) != 1:
        raise UserError(f"release files: expected exactly one *.manifest.json, found {len(manifests)}",
                        hint="pass the build directory or the release's files, e.g. build/quantix-os_0.2.0.*")
    return manifests[0]


def load(files: list[Path], *, hash_files: bool = True) -> Release:
    """Read and cross-check a release given its files (or a directory holding them)."""
    expanded: list[Path] = []
    for f in files:
        expanded.extend(sorted(p for p in f.iterdir() if p.is_file()) if f.is_dir() else [f])
    manifest_path = find_manifest(expanded)
    base = manifest_path.parent
    try:
        manifest = json.loads(_read_small(manifest_path, contract.MAX_MANIFEST_BYTES, "a manifest"))
    except ValueError as e:
        raise UserError(f"{manifest_path.name}: cannot read the manifest: {e}") from e
    where = manifest_path.name
    if not isinstance(manifest, dict):
        raise UserError(f"{where}: not a JSON object", hint="publish the manifest qx-build wrote")
    if manifest.get("format") != 1:
        raise UserError(f"{where}: field 'format' must be 1", hint="rebuild with this version of qx-build")
    if manifest.get("image_id") != IMAGE_ID:
        raise UserError(f"{where}: field 'image_id' must be {IMAGE_ID!r}")
    version = contract.check_version(_field(manifest, "version", str, where), f"{where}: field 'version'")
    if manifest_path.name != f"{IMAGE_ID}_{version}.manifest.json":
        raise UserError(f"{where}: the manifest of version {version} must be named {IMAGE_ID}_{version}.manifest.json")
    epoch = contract.check_int(_field(manifest, "security_epoch", int, where),
                               f"{where}: field 'security_epoch'", 0, contract.MAX_SECURITY_EPOCH)
    cmdline = contract.check_kernel_cmdline(_field(manifest, "kernel_cmdline", str, where),
                                            f"{where}: field 'kernel_cmdline'")
    arts = _field(manifest, "artifacts", dict, where)

    sums_path = base / SUMS
    if not sums_path.is_file():
        raise UserError(f"{SUMS}: not found next to {where}", hint="qx-build writes it into the build directory")
    sums = parse_sums(_read_small(sums_path, contract.MAX_SUMS_BYTES, SUMS))

    # What a host fetches is <v>/quantix-os_<v>.<kind suffix> (contract.target_path): an artifact under
    # any other name would be signed but never found, so the name must be exactly that one, and the
    # two artifacts must be two files.
    files = {kind: _field(_field(arts, kind, dict, f"{where}: artifacts"), "file", str, f"{where}: artifacts.{kind}")
             for kind in contract.ARTIFACTS}
    if files["root"] == files["uki"]:
        raise UserError(f"{where}: artifacts.root.file and artifacts.uki.file are the same file {files['root']!r}",
                        hint="the root payload and the UKI are two files: quantix-os_<v>.root.erofs.zst and "
                             "quantix-os_<v>.efi")

    def artifact(kind: str) -> Artifact:
        entry = arts[kind]
        name = check_filename(files[kind])
        expected = contract.artifact_name(version, kind)
        if name != expected:
            raise UserError(f"{where}: artifacts.{kind}.file is {name!r}, but the {kind} artifact of version "
                            f"{version} must be named {expected!r}",
                            hint="hosts fetch <version>/" + expected + "; publish the files qx-build wrote")
        size = contract.check_int(_field(entry, "size", int, f"{where}: artifacts.{kind}"),
                                  f"{where}: artifacts.{kind}.size", 1, contract.MAX_SLOT_SIZE)
        digest = _field(entry, "sha256", str, f"{where}: artifacts.{kind}")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise UserError(f"{where}: artifacts.{kind}.sha256 is not a sha256 (64 lowercase hex digits)")
        path = base / name
        if not path.is_file():
            raise UserError(f"{name}: listed in the manifest but not found", hint=f"copy it next to {where}")
        if sums.get(name) != digest:
            raise UserError(f"{SUMS}: the sha256 of {name} does not match artifacts.{kind}.sha256 of {where}",
                            hint="the files come from different builds; publish one build's files together")
        if path.stat().st_size != size:
            raise UserError(f"{name}: size {path.stat().st_size} does not match artifacts.{kind}.size {size}")
        if hash_files and sha256_file(path) != digest:
            raise UserError(f"{name}: its sha256 does not match {SUMS}", hint="the file is damaged; copy it again")
        return Artifact(kind, path, name, size, digest)

    root = artifact("root")
    uki = artifact("uki")
    if sums.get(manifest_path.name) not in (None, sha256_file(manifest_path)):
        raise UserError(f"{SUMS}: the sha256 of {manifest_path.name} does not match the file")
    if manifest_path.name not in sums:
        raise UserError(f"{SUMS}: has no line for {manifest_path.name}", hint="regenerate SHA256SUMS with qx-build")
    rootd = arts["root"]
    slot_size = contract.check_int(_field(rootd, "slot_size_min", int, f"{where}: artifacts.root"),
                                   f"{where}: artifacts.root.slot_size_min", 1, contract.MAX_SLOT_SIZE)
    slot_sha = _field(rootd, "uncompressed_sha256", str, f"{where}: artifacts.root")
    if not re.fullmatch(r"[0-9a-f]{64}", slot_sha):
        raise UserError(f"{where}: artifacts.root.uncompressed_sha256 is not a sha256")
    return Release(version, epoch, cmdline, slot_size, slot_sha, root, uki, manifest_path, sums_path, manifest)
