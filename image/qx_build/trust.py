"""The update trust anchor shipped in the image: the TUF ``root.json`` that ``qx-update`` starts from.

``make image TUF_ROOT=path/to/root.json`` (``qx-build image --tuf-root``) validates the file and stages
it in ``build/.work/trust/``; mkosi mounts that directory at ``/work/src/trust`` (``BuildSources=``) and
``image/scripts/postinst.chroot`` installs it as ``/usr/lib/quantix/tuf-root.json``. Without it the
image is built without an update key and ``qx-update status`` says so.

Without ``TUF_ROOT`` a build ships the root of the *development* repository keys in ``build/keys/``
(:func:`ensure_dev_keys`): made once by ``qx-release keys init --offline build/keys`` (the same code an
administrator uses, run as a command: ``qx_build`` never imports the update server), kept across
builds, and named on every build ("development keys") and in the release manifest (``trust``), so an
image built from a fresh checkout takes updates from ``make update-server`` on the same machine.

A development image also looks for updates there: ``DEV_UPDATE_URL`` (the build machine as ``make
boot``'s guest sees it) replaces ``server_url`` in the image's update.toml.

Invariant: the staging directory holds exactly one root that is TUF root metadata signed by a threshold
of its own root keys — a build never ships a root that no client could bootstrap from. Call order:
``stage(TUF_ROOT or None, trust_dir, dev_keys=build/keys)`` before mkosi; its result goes into the manifest.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from qx_common import log
from qx_common.errors import UserError
from qx_common.run import run

STAGED_NAME = "tuf-root.json"
IMAGE_PATH = "/usr/lib/quantix/tuf-root.json"
DEV_KEYS_NOTE = "DEVELOPMENT-KEYS.txt"
# Where a development image looks for updates: make update-server's default port on the build machine, as
# QEMU's user network (make boot) shows it to the guest. scripts/postinst.chroot writes it into update.toml.
DEV_UPDATE_URL = "http://10.0.2.2:8400/"
DEV_URL_NAME = "dev-update-url"
DEV_WARNING = ("development keys: the update trust anchor is build/keys/root.json, whose private keys sit "
               "unprotected in build/keys/ — fine for trying updates from your own machine (make update-server), "
               "never for hosts you ship; a release build passes TUF_ROOT=<offline dir>/root.json")


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


def ensure_dev_keys(keys_dir: Path) -> Path:
    """The development repository's ``root.json`` in ``keys_dir``, its keys made the first time only.

    Idempotent: an existing ``keys_dir/root.json`` is validated and reused, never replaced (images
    already built trust it). ``keys init --offline`` builds the directory under a temporary name and
    renames it, so a build killed meanwhile leaves no half-made key directory.
    """
    root = keys_dir / "root.json"
    if not root.exists():
        if keys_dir.exists() and any(keys_dir.iterdir()):
            raise UserError(f"{keys_dir}: holds files but no root.json",
                            hint=f"move {keys_dir} away (it is not a key directory qx-release made) and build again")
        keys_dir.parent.mkdir(parents=True, exist_ok=True)
        log.step(f"trust: creating development repository keys in {keys_dir} (once)")
        run([sys.executable, "-m", "qx_update_server.release_cli", "keys", "init", "--offline", str(keys_dir)])
        (keys_dir / DEV_KEYS_NOTE).write_text(
            "These TUF keys were made by 'make image' for development: " + DEV_WARNING + ".\n"
            "Images built with them trust root.json here; 'make update-server' serves updates signed with them.\n")
    validate(root)
    return root


def stage(root_file: Path | None, trust_dir: Path, *, dev_keys: Path | None = None) -> dict[str, object]:
    """Make ``trust_dir`` hold exactly the validated root; return the manifest's ``trust`` record.

    ``root_file`` (TUF_ROOT) wins; without it the development keys in ``dev_keys`` (made if missing);
    without either, nothing is shipped (the image has no update key).
    """
    dev = False
    if root_file is None and dev_keys is not None:
        root_file, dev = ensure_dev_keys(dev_keys), True
    data = validate(root_file) if root_file is not None else None  # validate before touching anything
    shutil.rmtree(trust_dir, ignore_errors=True)
    trust_dir.mkdir(parents=True)
    if data is None:
        log.step("trust: no TUF_ROOT given — the image is built without an update key")
        return {"keys": "none"}
    tmp = trust_dir / (STAGED_NAME + ".part")
    tmp.write_bytes(data)
    tmp.rename(trust_dir / STAGED_NAME)
    log.step(f"trust: shipping {root_file} as {IMAGE_PATH}")
    if dev:
        (trust_dir / DEV_URL_NAME).write_text(DEV_UPDATE_URL)
        log.step(f"trust: the image looks for updates at {DEV_UPDATE_URL} (make update-server, seen from make boot)")
        log.step(f"WARNING: {DEV_WARNING}")
    from tuf.api.metadata import Metadata, Root

    root: Root = Metadata[Root].from_bytes(data).signed
    return {"keys": "development" if dev else "given", "tuf_root_sha256": hashlib.sha256(data).hexdigest(),
            "tuf_root_version": root.version, "root_keyids": sorted(root.roles[Root.type].keyids)} | (
        {"server_url": DEV_UPDATE_URL} if dev else {})
