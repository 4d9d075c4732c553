"""Root password checks against a shadow file, through the system's libcrypt — the one home of the check
that the physical console (``qx_console.shadow``) and qx-node's web sign-in (``qx_node.websession``) both use.

Python 3.13 (the image's) has no ``crypt`` module and the image ships no ``openssl`` binary, but every
Debian system has libxcrypt (``libcrypt.so.1``, used by login/PAM): it verifies every hash format in
use (yescrypt ``$y$`` — Debian's default — SHA-512 ``$6$``, ...) and generates new yescrypt hashes.
crypt() keeps static state, so calls are serialised with a lock (a check takes tens of milliseconds:
callers on an event loop run it in a worker thread).

Invariant: a locked (``!``/``*``) or empty password field, an unknown user or a hash libcrypt refuses is
"no" — never an error that a caller could mistake for "yes". An unreadable shadow file is an
:class:`~qx_common.errors.EnvironmentError_`.
"""

from __future__ import annotations

import ctypes
import hmac
import threading
from pathlib import Path

from qx_common.errors import EnvironmentError_

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


def read_shadow(shadow: Path) -> list[str]:
    try:
        return shadow.read_text().splitlines()
    except OSError as e:
        raise EnvironmentError_(f"cannot read {shadow}: {e.strerror}") from e


def verify(shadow: Path, user: str, password: str) -> bool:
    """Is ``password`` the password of ``user`` in ``shadow``?"""
    for line in read_shadow(shadow):
        parts = line.split(":")
        if parts[0] == user and len(parts) > 1:
            stored = parts[1]
            if not stored or stored[0] in "!*":
                return False  # locked or no password: nobody gets in with one
            got = crypt(password, stored)
            return got is not None and hmac.compare_digest(got, stored)
    return False
