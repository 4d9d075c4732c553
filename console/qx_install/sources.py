"""Where an unattended install finds its answer file, in this order (the first source present wins):

1. the kernel command line ``qx.answer=<http or https URL>``, optionally pinned by
   ``qx.answer.sha256=<64 hex digits>``;
2. a volume with the filesystem label ``QXANSWER`` holding ``answer.toml`` (a USB stick, a virtual
   disk), mounted read-only in a private directory and unmounted again;
3. ``quantix/answer.toml`` on the installation medium (what ``qx-install iso`` bakes in).

Invariants: a source that is *named* but fails (the URL cannot be fetched before the deadline, the pin
does not match, the QXANSWER volume has no answer.toml) is an error — never a silent fall-through to
the next source, which could install with settings the operator did not mean. Nothing here parses
the answer: :func:`find_answer` returns bytes (at most :data:`MAX_BYTES`) and where they came from.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from qx_common import run as r
from qx_common.errors import ExternalError, UserError

LABEL = "QXANSWER"
FILE = "answer.toml"
MAX_BYTES = 1024 * 1024
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _cmdline_args(cmdline: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for word in cmdline.split():
        key, sep, value = word.partition("=")
        if sep and key in ("qx.answer", "qx.answer.sha256"):
            out[key] = value
    return out


def _fetch(url: str, *, timeout: float) -> bytes:
    """GET ``url`` (bounded in size), retrying until ``timeout``: the network may come up late."""
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while True:
        left = deadline - time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=max(1.0, min(10.0, left))) as resp:  # noqa: S310 - scheme checked
                data = resp.read(MAX_BYTES + 1)
            if len(data) > MAX_BYTES:
                raise UserError(f"qx.answer: {url} is larger than {MAX_BYTES} bytes",
                                hint="an answer file is a small TOML file: check the URL")
            return data
        except urllib.error.HTTPError as e:
            if e.code < 500:  # 404, 403...: the URL is wrong, retrying will not help
                raise ExternalError(f"qx.answer: {url} answered HTTP {e.code}",
                                    hint="check the URL on the kernel command line") from e
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            last = str(getattr(e, "reason", e))
        if time.monotonic() + 1 >= deadline:
            raise ExternalError(f"qx.answer: cannot fetch {url} within {timeout:.0f} s ({last})",
                                hint="check the network (DHCP) and the server, or use a QXANSWER volume")
        time.sleep(1)  # between attempts while the network comes up


def _from_url(url: str, pin: str | None, timeout: float) -> tuple[str, bytes]:
    if not url.startswith(("http://", "https://")):
        raise UserError(f"qx.answer: '{url[:200]}' is not an http or https URL",
                        hint="write qx.answer=https://server/answer.toml on the kernel command line")
    if pin is not None and not _HEX64.match(pin.lower()):
        raise UserError("qx.answer.sha256: is not 64 hexadecimal digits", hint="use the output of sha256sum")
    data = _fetch(url, timeout=timeout)
    if pin is not None and hashlib.sha256(data).hexdigest() != pin.lower():
        raise UserError(f"qx.answer: {url} does not match qx.answer.sha256",
                        hint="the file changed since it was pinned: pin the new hash or restore the file")
    return f"url {url}" + (" (sha256 pinned)" if pin else ""), data


def _label_device() -> str | None:
    link = Path("/dev/disk/by-label") / LABEL
    if link.exists():
        return str(link.resolve())
    if r.which("blkid") is None:
        return None
    found = r.run(["blkid", "-L", LABEL], check=False).stdout.strip()
    return found or None


@contextlib.contextmanager
def _mounted_ro(dev: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="qx-answer-") as mnt:
        r.run(["mount", "-o", "ro,nosuid,nodev,noexec", dev, mnt])
        try:
            yield Path(mnt)
        finally:
            r.run(["umount", mnt], check=False)


def _read_bounded(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(MAX_BYTES + 1)
    if len(data) > MAX_BYTES:
        raise UserError(f"{path.name}: larger than {MAX_BYTES} bytes", hint="an answer file is a small TOML file")
    return data


def _from_volume(dev: str) -> tuple[str, bytes]:
    with _mounted_ro(dev) as mnt:
        f = mnt / FILE
        if not f.is_file():
            raise UserError(f"the volume labelled {LABEL} ({dev}) has no {FILE}",
                            hint=f"put the answer file at the top of the volume as {FILE}")
        return f"volume {LABEL} ({dev})", _read_bounded(f)


def find_answer(*, cmdline: str, media_dirs: list[Path], timeout: float = 120.0) -> tuple[str, bytes] | None:
    """(where, bytes) of the answer file, or None when no source names one."""
    args = _cmdline_args(cmdline)
    if "qx.answer.sha256" in args and "qx.answer" not in args:
        raise UserError("qx.answer.sha256 is given without qx.answer", hint="add qx.answer=<URL>")
    if "qx.answer" in args:
        return _from_url(args["qx.answer"], args.get("qx.answer.sha256"), timeout)
    dev = _label_device()
    if dev is not None:
        return _from_volume(dev)
    for base in media_dirs:
        for f in (base / "quantix" / FILE, base / FILE):
            if f.is_file():
                return f"medium {f}", _read_bounded(f)
    return None
