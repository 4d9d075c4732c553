"""Root password check and change against ``<root>/etc/shadow``, through the system's libcrypt.

Python 3.13 (the image's) has no ``crypt`` module and the image ships no ``openssl`` binary, but every
Debian system has libxcrypt (``libcrypt.so.1``, used by login/PAM): it verifies every hash format in
use (yescrypt ``$y$`` — Debian's default — SHA-512 ``$6$``, ...) and generates new yescrypt hashes.
crypt() keeps static state, so calls are serialised with a lock.

The shadow file is rewritten atomically (temp file + rename in the directory of the symlink's target,
mode and owner kept), so a crash leaves the old or the new file, never a torn one.
"""

from __future__ import annotations

import ctypes
import hmac
import os
import threading
from pathlib import Path

from qx_common.errors import EnvironmentError_, UserError

from qx_console.store import atomic_write

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _libcrypt() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libcrypt.so.1")
        except OSError as e:
            raise EnvironmentError_("libcrypt.so.1 is missing", hint="install libcrypt1") from e
        lib.crypt.restype = ctypes.c_char_p
        lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        lib.crypt_gensalt.restype = ctypes.c_char_p
        lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
        _lib = lib
    return _lib


def crypt(password: str, setting: str) -> str | None:
    lib = _libcrypt()
    with _lock:
        out = lib.crypt(password.encode(), setting.encode())
    if not out or out.startswith(b"*"):
        return None
    return out.decode()


def hash_password(password: str) -> str:
    lib = _libcrypt()
    with _lock:
        salt = lib.crypt_gensalt(b"$y$", 0, None, 0)
    if not salt:
        raise EnvironmentError_("libcrypt could not make a salt (no randomness?)")
    hashed = crypt(password, salt.decode())
    if hashed is None:
        raise EnvironmentError_("libcrypt could not hash the password")
    return hashed


def _read(shadow: Path) -> list[str]:
    try:
        return shadow.read_text().splitlines()
    except OSError as e:
        raise EnvironmentError_(f"cannot read {shadow}: {e.strerror}") from e


def verify(shadow: Path, user: str, password: str) -> bool:
    for line in _read(shadow):
        parts = line.split(":")
        if parts[0] == user and len(parts) > 1:
            stored = parts[1]
            if not stored or stored[0] in "!*":
                return False  # locked or no password: nobody gets in with one
            got = crypt(password, stored)
            return got is not None and hmac.compare_digest(got, stored)
    return False


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
