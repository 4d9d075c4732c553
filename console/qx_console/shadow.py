"""Root password check and change against ``<root>/etc/shadow``, through the system's libcrypt.

The check and the hashing live in :mod:`qx_common.passwords` (qx-node's web sign-in checks the password
the same way); this module adds the rules for a new password and the change of the shadow file.

The shadow file is rewritten atomically (temp file + rename in the directory of the symlink's target,
mode and owner kept), so a crash leaves the old or the new file, never a torn one.
"""

from __future__ import annotations

import os
from pathlib import Path

from qx_common.errors import EnvironmentError_, UserError
# The check itself has one home, shared with qx-node's web sign-in; re-exported as this module's API.
from qx_common.passwords import crypt, hash_password, verify  # noqa: F401
from qx_common.passwords import read_shadow as _read

from qx_console.store import atomic_write


MIN_LENGTH = 8


def check_new_password(password: str, again: str) -> None:
    if len(password) < MIN_LENGTH:
        raise UserError(f"new password: is shorter than {MIN_LENGTH} characters",
                        hint=f"use at least {MIN_LENGTH} characters")
    if password != again:
        raise UserError("confirm password: does not match the new password", hint="type the same password twice")
    if ":" in password or "\n" in password:
        raise UserError("new password: contains ':' or a newline", hint="choose a password without them")


def set_password(shadow: Path, user: str, password: str) -> None:
    set_password_hash(shadow, user, hash_password(password))


HASH_PREFIXES = ("$y$", "$gy$", "$7$", "$6$", "$5$")


def is_password_hash(value: str) -> bool:
    """A crypt(3) hash of a kind libxcrypt verifies (yescrypt, scrypt, SHA-512, SHA-256), not clear text."""
    return (value.startswith(HASH_PREFIXES) and value.count("$") >= 3 and ":" not in value
            and "\n" not in value and value.isascii() and " " not in value)


def set_password_hash(shadow: Path, user: str, hashed: str) -> None:
    """Store an already hashed password (an installer answer file carries only the hash)."""
    if not is_password_hash(hashed):
        raise UserError("password hash: is not a crypt hash", hint="make one with: openssl passwd -6")
    lines = _read(shadow)
    import time

    days = int(time.time() // 86400)  # "last changed" in days since the epoch; 0 would force a change
    found = False
    for i, line in enumerate(lines):
        parts = line.split(":")
        if parts[0] == user:
            while len(parts) < 9:
                parts.append("")
            parts[1] = hashed
            parts[2] = str(days)
            lines[i] = ":".join(parts)
            found = True
    if not found:
        raise EnvironmentError_(f"user '{user}' is not in {shadow}")
    target = Path(os.path.realpath(shadow))
    st = target.stat()
    atomic_write(target, "\n".join(lines) + "\n", mode=st.st_mode & 0o7777)
    try:
        os.chown(target, st.st_uid, st.st_gid)
    except PermissionError:
        pass
