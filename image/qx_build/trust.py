"""The update trust anchor shipped in the image: the TUF ``root.json`` that ``qx-update`` starts from.

``make image TUF_ROOT=path/to/root.json`` (``qx-build image --tuf-root``) validates the file and stages
it in ``build/.work/trust/``; mkosi mounts that directory at ``/work/src/trust`` (``BuildSources=``) and
``image/scripts/postinst.chroot`` installs it as ``/usr/lib/quantix/tuf-root.json``. Without it the
image is built without an update key and ``qx-update status`` says so.

Invariant: the staging directory holds either nothing or one root that is TUF root metadata signed by
a threshold of its own root keys — a build never ships a root that no client could bootstrap from.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from qx_common import log
from qx_common.errors import UserError

STAGED_NAME = "tuf-root.json"
IMAGE_PATH = "/usr/lib/quantix/tuf-root.json"


def validate(root_file: Path) -> bytes:
    """Return the bytes of ``root_file`` if it is a self-signed TUF root; else a UserError naming TUF_ROOT."""
    from tuf.api.exceptions import UnsignedMetadataError
    from tuf.api.metadata import Metadata, Root
    from tuf.api.serialization import DeserializationError

    hint = "pass the repository's root.json: 'qx-release keys init' writes it (e.g. make image TUF_ROOT=root.json)"
    try:
        data = root_file.read_bytes()
    except OSError as e:
        raise UserError(f"TUF_ROOT: cannot read {root_file}: {e.strerror or e}", hint=hint) from e
    try:
        md = Metadata.from_bytes(data)
    except DeserializationError as e:
        raise UserError(f"TUF_ROOT: {root_file} is not TUF metadata ({e})", hint=hint) from e
    if not isinstance(md.signed, Root):
        raise UserError(f"TUF_ROOT: {root_file} is {md.signed.type} metadata, not root", hint=hint)
    try:
        md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
    except UnsignedMetadataError as e:
        raise UserError(f"TUF_ROOT: {root_file} is not signed by a threshold of its own root keys ({e})",
                        hint="sign it with the root keys ('qx-release keys status' shows them)") from e
    return data


def stage(root_file: Path | None, trust_dir: Path) -> None:
    """Make ``trust_dir`` hold exactly the validated root (or nothing when ``root_file`` is None)."""
    data = validate(root_file) if root_file is not None else None  # validate before touching anything
    shutil.rmtree(trust_dir, ignore_errors=True)
    trust_dir.mkdir(parents=True)
    if data is None:
        log.step("trust: no TUF_ROOT given — the image is built without an update key")
        return
    tmp = trust_dir / (STAGED_NAME + ".part")
    tmp.write_bytes(data)
    tmp.rename(trust_dir / STAGED_NAME)
    log.step(f"trust: shipping {root_file} as {IMAGE_PATH}")
