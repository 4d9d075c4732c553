"""Key files: the online keys (targets, snapshot, timestamp) and the offline root keys.

Layout under the data directory — neither is inside ``repository/``, so nothing here is ever served:

* ``keys/online/<keyid>.pem`` — private keys the server signs with unattended.
* ``root-keys/<keyid>.pem``    — root keys. ``keys init`` writes them here; an operator may move the
  directory to offline media and pass it back (``--root-keys-dir``) only for ``keys rotate``. The root
  role needs ``threshold`` of them, so losing one key does not lose the repository.

Which key signs which role is decided by the signed root metadata (a key is looked up by its keyid),
so a rotation writes the new key files first and the root that names them second: a crash between
leaves unused files, never a root whose keys are missing.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner

from qx_common.errors import EnvironmentError_
from qx_common.fs import atomic_write


class KeyDir:
    """A directory of ed25519 private keys named by keyid."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def generate(self) -> CryptoSigner:
        signer = CryptoSigner.generate_ed25519()
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        atomic_write(self.path / f"{signer.public_key.keyid}.pem", signer.private_bytes, mode=0o600)
        return signer

    def load(self, keyid: str) -> CryptoSigner | None:
        path = self.path / f"{keyid}.pem"
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise EnvironmentError_(f"cannot read key {path}: {e}") from e
        try:
            signer = CryptoSigner(load_pem_private_key(pem, None))
        except (ValueError, TypeError) as e:  # encrypted (TypeError), damaged, or not a key python-tuf signs with
            raise EnvironmentError_(f"key file {path} is not an unencrypted private key ({e})",
                                    hint="keep key files as keys init wrote them (an unencrypted PEM, protect the "
                                         "medium instead); a damaged file: restore it from the backup") from e
        if signer.public_key.keyid != keyid:
            raise EnvironmentError_(f"key file {path} holds key {signer.public_key.keyid}, not {keyid}",
                                    hint="key files must keep the name keys init gave them")
        return signer

    def signers(self, keyids: list[str]) -> list[CryptoSigner]:
        return [s for k in keyids if (s := self.load(k)) is not None]
