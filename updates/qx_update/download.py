"""Resumable, length-capped artifact downloads into ``<state_dir>/downloads``, verified against TUF.

A download of target T goes to ``<sha256(T)>.part`` (keyed by the *signed* hash, so bytes of one
release are never resumed into another) and is synced every :data:`SYNC_EVERY` bytes (in a background
thread, so the transfer does not stall; before a test crash point, synchronously), so a power cut or
reboot keeps what arrived. The next attempt re-hashes the prefix it already has (once) and asks for
the rest with ``Range: bytes=N-``; a server that ignores Range (200) restarts the file and the hash.
Never more than the signed length is accepted (endless data). Every byte is hashed as it lands, in a
background thread (:mod:`qx_update.hashing`), with each algorithm the signed ``TargetFile`` lists; when
complete the length and the digests are compared with the signed ones — the same check as
``TargetFile.verify_length_and_hashes``, without reading the file a second time (an algorithm hashlib
lacks falls back to exactly that call). A mismatch after a resume discards the file and downloads once
more from zero, a mismatch of a fresh download is a refusal; either way nothing reaches a slot.
The verified file is renamed to ``<sha256>.<name>``; later runs reuse it after re-verifying.
Each download has an overall deadline (``deadline``, update.toml's ``download_deadline``; see
:mod:`qx_update.deadline`): a server trickling bytes fails it with an error naming the deadline, and what
arrived stays in the ``.part`` file for the next run.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import urllib3
from tuf.api import exceptions as tufx
from tuf.api.metadata import TargetFile

from qx_common import log
from qx_common.errors import EnvironmentError_, ExternalError
from qx_update import crashpoint, hashing
from qx_update.deadline import DEFAULT_DEADLINE, Deadline
from qx_update.errors import VerificationError
from qx_common.fs import fsync_dir
from qx_common.progress import Observer, Progress

CHUNK = 4 * 1024 * 1024
SYNC_EVERY = 32 * 1024 * 1024
TIMEOUT = (10, 60)  # connect, read-gap seconds
_log = log.get("update.download")


class NotServed(ExternalError):
    """The server answered that it does not serve the file (HTTP 4xx), or an offline copy lacks it."""


_POOLS: dict[tuple[str, int], urllib3.PoolManager] = {}
# A kept-alive connection the server (or a proxy) closed while it sat idle in the pool fails on reuse
# before any answer ("Remote end closed connection without response"): uvicorn closes idle connections
# after 5 s, nginx after 75 s, and a slow host leaves gaps that long between requests (seen in the OTA
# e2e under TCG). A GET is safe to send again on a new connection: every answer is still checked against
# signed hashes and lengths, and the download deadline still bounds the whole. Only failures before the
# answer's headers are retried: bodies are read after urllib3's retry loop (preload_content=False).
RETRIES = urllib3.Retry(total=3, connect=3, read=3, redirect=0, status=0, other=0,
                        allowed_methods=frozenset({"GET"}), raise_on_status=False)


def pool(url: str, connections: int = 1) -> urllib3.PoolManager:
    """urllib3 directly (ngclient already loads it), honouring http(s)_proxy and no_proxy like ngclient.

    ``connections``: kept-alive connections per host (the chunk fetcher's parallel requests)."""
    parsed = urlparse(url)
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and urllib.request.proxy_bypass(parsed.hostname or ""):
        proxy = None
    key = (proxy or "", connections)
    if key not in _POOLS:
        _POOLS[key] = (urllib3.ProxyManager(proxy, maxsize=connections) if proxy
                       else urllib3.PoolManager(maxsize=connections))
    return _POOLS[key]


def _sha(info: TargetFile) -> str:
    return info.hashes.get("sha256") or next(iter(info.hashes.values()))


def _verify(info: TargetFile, path: Path) -> None:
    with path.open("rb") as f:
        info.verify_length_and_hashes(f)


def _check(info: TargetFile, path: Path, digests: dict[str, str] | None) -> None:
    """``TargetFile.verify_length_and_hashes`` semantics over digests computed while downloading."""
    if digests is None:  # an algorithm hashlib lacks: let python-tuf read the file
        _verify(info, path)
        return
    length = path.stat().st_size
    if length != info.length:
        raise tufx.LengthOrHashMismatchError(f"Observed length {length} does not match expected {info.length}")
    for algo, expected in info.hashes.items():
        if digests[algo] != expected:
            raise tufx.LengthOrHashMismatchError(f"Observed hash {digests[algo]} does not match expected hash {expected}")


class _Syncer:
    """fsync ``fd`` in a background thread, at most one at a time (a sync still running is not doubled)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._thread: threading.Thread | None = None

    def _sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError:
            pass  # best effort: the final, synchronous fsync reports errors

    def kick(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._sync, name="qx-update-fsync", daemon=True)
            self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()


def _hash_prefix(path: Path, length: int, hasher: hashing.BackgroundHasher) -> None:
    """Feed the first ``length`` bytes of a partial download to ``hasher`` (a resume, once)."""
    with path.open("rb", buffering=0) as f:
        while length > 0:
            block = f.read(min(CHUNK, length))
            if not block:
                raise tufx.LengthOrHashMismatchError(f"{path} shrank while resuming")
            hasher.update(block)
            length -= len(block)


def _open_stream(url: str, offset: int, deadline: Deadline | None = None) -> tuple[int, object]:
    """(offset the body starts at, iterator of chunks); ``deadline`` shuts the response down when it passes."""
    if url.startswith("file://"):
        try:
            f = Path(unquote(urlparse(url).path)).open("rb")
        except FileNotFoundError as e:
            raise NotServed(f"cannot read {url}: the offline copy does not have it") from e
        f.seek(offset)

        def chunks():  # type: ignore[no-untyped-def]
            with f:
                while block := f.read(CHUNK):
                    yield block
        return offset, chunks()
    headers = {"User-Agent": "qx-update", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    def send() -> urllib3.BaseHTTPResponse:
        r = pool(url).request("GET", url, headers=headers, preload_content=False, retries=RETRIES,
                               timeout=urllib3.Timeout(connect=TIMEOUT[0], read=TIMEOUT[1]))
        if deadline is not None:
            deadline.watch(r)  # in the worker: a response that comes after the deadline is shut down at once
        return r

    try:
        # Under the deadline from the connection on: a server that trickles its headers, or a socket that
        # never answers, is stopped by it too (not only a trickled body).
        resp = send() if deadline is None else deadline.run(send)
    except urllib3.exceptions.HTTPError as e:
        raise ExternalError(f"cannot download {url}: {e}", hint="check the network; the download resumes next time") from e
    if resp is None:
        raise deadline.error()  # type: ignore[union-attr] - run() returns None only with a deadline
    if resp.status == 416 and offset:
        resp.release_conn()
        return -1, iter(())
    if resp.status >= 400:
        resp.release_conn()
        raise (NotServed if resp.status < 500 else ExternalError)(f"cannot download {url}: HTTP {resp.status}")
    start = 0
    if resp.status == 206:
        m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
        start = int(m.group(1)) if m else -1
        if start != offset:
            resp.release_conn()
            return -1, iter(())
    return start, resp.stream(CHUNK, decode_content=False)


def open_body(url: str, deadline: Deadline) -> Iterator[bytes]:
    """The whole body of ``url`` (http(s):// or file://) as blocks of up to :data:`CHUNK` bytes, under
    ``deadline`` — for a caller that verifies what it reads itself (:mod:`qx_update.chunked`'s stream).
    Call ``close()`` on the iterator when done early."""
    start, blocks = _open_stream(url, 0, deadline)
    if start != 0:
        close = getattr(blocks, "close", None)
        if close:
            close()
        raise ExternalError(f"cannot download {url}: the server answered a range that was not asked for")
    return blocks  # type: ignore[return-value]


@dataclass
class Tally:
    """What a :func:`fetch` took from the network: the bytes of every response body it read (a resumed
    prefix, a file already in the cache and a retried attempt's first try are counted as received)."""

    received: int = 0


def fetch(info: TargetFile, url: str, dest_dir: Path, *, label: str, progress: bool | Observer = True,
          crash_point: str | None = None, deadline: float = DEFAULT_DEADLINE, tally: Tally | None = None) -> Path:
    """Download (or resume, or reuse) target ``info`` from ``url``; return the verified file.

    ``deadline``: seconds the download may take in all (each attempt); past it, an ExternalError.
    ``tally``: add the bytes received from the network to it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    sha = _sha(info)
    done = dest_dir / f"{sha}.{Path(info.path).name}"
    part = dest_dir / f"{sha}.part"
    if done.exists():
        try:
            _verify(info, done)
            _log.info("  %s: already downloaded and verified", label)
            return done
        except tufx.LengthOrHashMismatchError:
            done.unlink()
    for attempt in (1, 2):
        resumed, digests = _download(info, url, part, label=label, progress=progress, crash_point=crash_point,
                                     deadline=deadline, tally=tally)
        try:
            _check(info, part, digests)
        except tufx.LengthOrHashMismatchError as e:
            part.unlink(missing_ok=True)
            if resumed and attempt == 1:
                _log.warning("  %s: resumed download did not verify; downloading again from the start", label)
                continue
            raise VerificationError(f"{info.path}: downloaded data does not match its signed length or hash "
                                    f"(tampered artifact): {e}") from e
        os.replace(part, done)
        fsync_dir(dest_dir)
        return done
    raise AssertionError("unreachable")


def _download(info: TargetFile, url: str, part: Path, *, label: str, progress: bool | Observer,
              crash_point: str | None, deadline: float = DEFAULT_DEADLINE,
              tally: Tally | None = None) -> tuple[bool, dict[str, str] | None]:
    """Bring ``part`` to the signed length; return (resumed, digests of its bytes or None)."""
    have = part.stat().st_size if part.exists() else 0
    if have > info.length:
        part.unlink()
        have = 0
    if not hashing.supported(info.hashes):
        hasher = None
    else:
        hasher = hashing.BackgroundHasher(info.hashes)
    try:
        with Deadline(deadline, f"download of {info.path}") as dl:
            resumed = _download_into(info, url, part, have, hasher, label=label, progress=progress,
                                     crash_point=crash_point, deadline=dl, tally=tally)
        return resumed, hasher.hexdigests() if hasher else None
    finally:
        if hasher:
            hasher.close()


def _download_into(info: TargetFile, url: str, part: Path, have: int, hasher: hashing.BackgroundHasher | None, *,
                   label: str, progress: bool | Observer, crash_point: str | None, deadline: Deadline | None = None,
                   tally: Tally | None = None) -> bool:
    if have == info.length:
        if hasher:
            _hash_prefix(part, have, hasher)
        return True
    start, chunks = _open_stream(url, have, deadline)
    if start == -1:  # the server could not continue from our offset: start over
        have, (start, chunks) = 0, _open_stream(url, 0, deadline)
        part.unlink(missing_ok=True)
    resumed = False
    if start and start == have:
        resumed = True
        _log.info("  %s: resuming at %.1f MiB", label, have / 1024**2)
        if hasher:
            _hash_prefix(part, have, hasher)
    elif start == 0 and have:
        have = 0  # 200 instead of 206: the server ignored Range
    bar = Progress(f"downloading {label}", info.length, start=have, enabled=progress)
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise EnvironmentError_(f"cannot write {part}: {e.strerror}") from e
    syncer = _Syncer(fd)
    try:
        os.ftruncate(fd, have)
        os.lseek(fd, have, os.SEEK_SET)
        got, synced = have, have
        try:
            for block in chunks:  # type: ignore[attr-defined]
                if got + len(block) > info.length:
                    raise VerificationError(f"{info.path}: the server sent more than the signed {info.length} "
                                            f"bytes (endless-data attack); download stopped")
                if hasher:
                    hasher.update(block)  # bytes: immutable, safe to hash in the other thread
                view = memoryview(block)
                while view:
                    view = view[os.write(fd, view):]
                got += len(block)
                if tally is not None:
                    tally.received += len(block)
                bar.update(len(block))
                if crash_point and got >= CHUNK and synced == have:
                    os.fsync(fd)  # the test kills us right after: the prefix must be on disk
                    synced = got
                    crashpoint.reached(crash_point)
                elif got - synced >= SYNC_EVERY:
                    syncer.kick()
                    synced = got
        except urllib3.exceptions.HTTPError as e:
            if deadline is not None and deadline.expired:
                raise deadline.error(got) from e
            raise ExternalError(f"download of {info.path} interrupted at {got} bytes: {e}",
                                hint="run the update again: it resumes where it stopped") from e
        if deadline is not None and deadline.expired and got < info.length:
            # The shutdown can also look like the end of the body: a short file, not a tampered one.
            raise deadline.error(got)
        syncer.wait()
        os.fsync(fd)
    finally:
        syncer.wait()
        os.close(fd)
        close = getattr(chunks, "close", None)
        if close:
            close()
    bar.close()
    return resumed
