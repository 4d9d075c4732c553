"""Where an unattended install finds its answer file, in this order (the first that is present wins):

1. the kernel command line ``qx.answer=<http or https URL>``, optionally pinned with
   ``qx.answer.sha256=<64 hex digits>``: fetched with a per-attempt timeout, retried until a deadline
   (the network may come up after the installer starts), at most :data:`MAX_BYTES`;
2. a volume labelled ``QXANSWER`` (filesystem label or GPT partition name; ``/dev/disk/by-label``,
   ``by-partlabel`` or ``blkid``) holding ``answer.toml``:
   FAT read with mtools (no mount: works where the kernel has no vfat driver), anything else mounted
   read-only in a private temporary directory and unmounted again;
3. ``quantix/answer.toml`` under one of ``media_dirs`` (the mounted installation medium, where
   ``qx-install iso --answer`` puts it).

Invariants:

* A source that is *configured* but fails — a URL that cannot be fetched, a pin that does not match, a
  ``QXANSWER`` volume without ``answer.toml``, an answer file over 1 MiB — is an error, never a fall-through
  to the next source: an operator who asked for one answer file must not get another one's install.
* Only the bytes are returned; :func:`qx_install.answer.parse` validates them. Nothing is written.

Call order: :func:`find_answer` → :func:`qx_install.answer.parse` (``source=`` the description returned).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from qx_common import log
from qx_common import run as r
from qx_common.errors import EnvironmentError_, ExternalError, UserError
from qx_install import disks
from qx_install.answer import MAX_BYTES

LABEL = "QXANSWER"
FILE = "answer.toml"
MEDIA_ANSWER = "quantix/answer.toml"   # under a media dir (qx_install.remaster.ANSWER_PATH puts it there)
URL_PARAM = "qx.answer"
PIN_PARAM = "qx.answer.sha256"
# How long the URL source waits in all: a switch port running spanning tree forwards only after ~30 s,
# then DHCP; an installer that gave up after 20 s would fail on such networks.
DEFAULT_TIMEOUT = 120.0
ATTEMPT_TIMEOUT = 5.0      # seconds one connection attempt or one read may block
_FAT = ("vfat", "msdos")
_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_MDIR_SIZE = re.compile(r"\s(\d+)\s+\d{4}-\d\d-\d\d\s")

_log = log.get("install.sources")


def find_answer(*, cmdline: str, media_dirs: list[Path],
                timeout: float = DEFAULT_TIMEOUT) -> tuple[str, bytes] | None:
    """(a description of where the answer file came from, its bytes), or None when there is none.

    ``cmdline`` is the kernel command line (``/proc/cmdline``); ``timeout`` bounds the URL source as a
    whole (all attempts). Raises :class:`UserError` (bad parameter, pin mismatch, oversized or missing
    file on a configured source), :class:`EnvironmentError_` (no connection to the server before the
    deadline: the network), :class:`ExternalError` (the server answered with an error or too slowly, or
    a command failed).
    """
    params = kernel_params(cmdline)
    url, pin = params.get(URL_PARAM), params.get(PIN_PARAM)
    if pin is not None and url is None:
        raise UserError(f"{PIN_PARAM} is on the kernel command line but {URL_PARAM} is not",
                        hint=f"add {URL_PARAM}=https://... (the pin checks the file fetched from it), or remove it")
    if url is not None:
        return _from_url(url, pin, timeout)
    found = _from_label()
    if found is not None:
        return found
    for d in media_dirs:
        path = d / MEDIA_ANSWER
        if path.is_file():
            return f"{path} on the installation medium", _read_bounded(path, str(path))
    return None


def kernel_params(cmdline: str) -> dict[str, str]:
    """``key=value`` words of a kernel command line, split as the kernel does (whitespace outside double
    quotes; the quotes removed). A key given twice keeps its last value, as the kernel's parameters do."""
    out: dict[str, str] = {}
    word: list[str] = []
    quoted = False
    for c in cmdline + " ":
        if c == '"':
            quoted = not quoted
        elif c.isspace() and not quoted:
            if word:
                key, sep, value = "".join(word).partition("=")
                if sep:
                    out[key] = value
                word = []
        else:
            word.append(c)
    return out


# ---------------------------------------------------------------------------------------------
# 1. A URL on the kernel command line.


class _Retry(Exception):
    """A failure worth another attempt before the deadline (no network yet, a 5xx, a refused connection).
    ``answered``: the server itself answered (a 5xx), so giving up is the server's fault, not the network's."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never from https to http: that would drop the server's authentication."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        if urlsplit(req.full_url).scheme == "https" and urlsplit(newurl).scheme != "https":
            raise ExternalError(f"{URL_PARAM}: {req.full_url} redirects to {newurl}, which is not https",
                                hint="serve the answer file over https without a redirect to http")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _from_url(url: str, pin: str | None, timeout: float) -> tuple[str, bytes]:
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed [IPv6 bracket
        ok = False
    if not ok:
        raise UserError(f"{URL_PARAM}: '{url[:200]}' is not an http or https URL",
                        hint=f"write {URL_PARAM}=https://server/path/answer.toml on the kernel command line")
    if pin is not None and not _SHA256.match(pin):
        raise UserError(f"{PIN_PARAM}: '{pin[:80]}' is not a SHA-256 checksum",
                        hint="give the 64 hex digits `sha256sum answer.toml` prints")
    data = _fetch(url, timeout)
    if pin is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != pin.lower():
            raise UserError(f"{URL_PARAM}: {url} has SHA-256 {got}, not {pin.lower()} as {PIN_PARAM} requires",
                            hint="the file changed or the pin is wrong: pin what `sha256sum answer.toml` prints "
                                 "for the file you mean to serve")
    return f"{url}{' (sha256 pinned)' if pin else ''}", data


def _fetch(url: str, timeout: float) -> bytes:
    """GET ``url`` with retries until ``timeout`` seconds have passed; at most :data:`MAX_BYTES`."""
    deadline = time.monotonic() + timeout
    delay, attempts = 0.25, 0
    opener = urllib.request.build_opener(_NoDowngrade)
    while True:
        attempts += 1
        try:
            return _get(opener, url, deadline, timeout)
        except _Retry as e:
            last = e
            _log.info("answer file: %s: %s; trying again", url, e)
        if time.monotonic() + delay >= deadline:
            msg = f"{URL_PARAM}: could not fetch {url} within {timeout:g} s ({attempts} attempt(s); last: {last})"
            if last.answered:
                raise ExternalError(msg, hint="the server answers with an error: check it and the file it serves")
            raise EnvironmentError_(msg, hint="check that this machine gets a network address (DHCP) and can "
                                              "reach the server")
        time.sleep(delay)  # back off: the network may come up in a moment
        delay = min(delay * 2, 2.0)


def _get(opener: urllib.request.OpenerDirector, url: str, deadline: float, timeout: float) -> bytes:
    left = deadline - time.monotonic()
    req = urllib.request.Request(url, headers={"User-Agent": "qx-install", "Accept": "*/*"})
    try:
        with opener.open(req, timeout=max(0.05, min(ATTEMPT_TIMEOUT, left))) as resp:
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > MAX_BYTES:
                raise _too_large(url)
            chunks: list[bytes] = []
            total = 0
            while True:
                # The socket timeout bounds each read; this bounds a server that trickles bytes.
                if time.monotonic() > deadline:
                    raise ExternalError(f"{URL_PARAM}: {url} did not finish sending within {timeout:g} s",
                                        hint="check the server; the answer file is small and should arrive at once")
                block = resp.read1(64 * 1024)
                if not block:
                    return b"".join(chunks)
                total += len(block)
                if total > MAX_BYTES:
                    raise _too_large(url)
                chunks.append(block)
    except urllib.error.HTTPError as e:
        if e.code >= 500 or e.code in (408, 425, 429):
            raise _Retry(f"HTTP {e.code} {e.reason}", answered=True) from e
        raise ExternalError(f"{URL_PARAM}: {url} answered HTTP {e.code} {e.reason}",
                            hint="check the URL on the kernel command line and that the server serves the file") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, ssl.SSLCertVerificationError):
            raise ExternalError(f"{URL_PARAM}: {url}: the server's certificate is not trusted "
                                f"({e.reason.verify_message})",
                                hint=f"use a certificate from a public CA, or http:// with {PIN_PARAM}=") from e
        raise _Retry(str(e.reason)) from e
    except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
        if time.monotonic() > deadline and isinstance(e, TimeoutError):
            raise ExternalError(f"{URL_PARAM}: {url} did not answer within {timeout:g} s",
                                hint="check that the server is up and answers quickly") from e
        raise _Retry(f"{type(e).__name__}: {e}") from e


def _too_large(where: str) -> UserError:
    return UserError(f"answer file {where} is larger than {MAX_BYTES // 1024} KiB",
                     hint="an answer file is a short TOML file: check that this is the right file")


# ---------------------------------------------------------------------------------------------
# 2. A volume labelled QXANSWER.


def _from_label() -> tuple[str, bytes] | None:
    """The volume whose filesystem label or GPT partition name is QXANSWER (the issue allows either:
    a USB stick formatted with a label, or a partition named so on a virtual disk)."""
    devices: set[str] = set()
    for link in (disks.BY_LABEL / LABEL, Path("/dev/disk/by-partlabel") / LABEL):
        if link.exists():
            devices.add(str(link.resolve()))
    for token in ("LABEL", "PARTLABEL"):
        # -c /dev/null: probe the devices as they are now; blkid's cache trusts an entry for 2 s, so a
        # loop device or stick detached and reattached meanwhile would still show its old label.
        res = r.run(["blkid", "-c", "/dev/null", "-t", f"{token}={LABEL}", "-o", "device"], check=False, timeout=30)
        devices.update(line.strip() for line in res.stdout.splitlines() if line.startswith("/dev/"))
    if not devices:
        return None
    if len(devices) > 1:
        raise UserError(f"several volumes are labelled {LABEL}: {', '.join(sorted(devices))}",
                        hint=f"keep one volume labelled {LABEL} (the installer does not guess which one)")
    dev = devices.pop()
    where = f"volume labelled {LABEL} ({dev})"
    probe = r.run(["blkid", "-p", "-o", "export", dev], check=False, timeout=30).stdout
    fstype = next((line[5:] for line in probe.splitlines() if line.startswith("TYPE=")), "")
    with tempfile.TemporaryDirectory(prefix="qx-answer-") as tmp:
        if fstype in _FAT:
            return where, _read_fat(dev, where, Path(tmp))
        try:
            with disks.mounted_ro(dev, fstype) as root:
                path = root / FILE
                if not path.is_file():
                    raise _not_on_volume(where)
                return where, _read_bounded(path, f"{where}: {FILE}")
        except ExternalError as e:
            raise ExternalError(f"{where} could not be read: {e}",
                                hint="format it as FAT (mkfs.vfat -n QXANSWER) or ext4 (mkfs.ext4 -L QXANSWER)") from e


def _read_fat(dev: str, where: str, tmp: Path) -> bytes:
    """answer.toml from a FAT volume through mtools, its size checked before it is copied out."""
    listing = r.run(["mdir", "-i", dev, f"::/{FILE}"], env=_MTOOLS_ENV, check=False, timeout=30)
    if listing.returncode != 0:
        if "not found" in listing.stderr:
            raise _not_on_volume(where)
        raise ExternalError(f"{where} could not be read: {listing.stderr.strip()[-300:]}",
                            hint=f"check the volume (fsck.vfat {dev})")
    m = _MDIR_SIZE.search(listing.stdout)
    if m and int(m.group(1)) > MAX_BYTES:
        raise _too_large(f"{where}: {FILE}")
    local = tmp / FILE
    r.run(["mcopy", "-n", "-i", dev, f"::/{FILE}", str(local)], env=_MTOOLS_ENV, timeout=60)
    return _read_bounded(local, f"{where}: {FILE}")


def _not_on_volume(where: str) -> UserError:
    return UserError(f"{where} holds no {FILE}",
                     hint=f"put the answer file at the top of the volume as {FILE}, or remove the "
                          f"{LABEL} label")


# ---------------------------------------------------------------------------------------------
# Files.


def _read_bounded(path: Path, where: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ExternalError(f"{where} could not be read: {e.strerror or e}") from e
    if len(data) > MAX_BYTES:
        raise _too_large(where)
    return data

