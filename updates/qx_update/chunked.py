"""Delta updates: build an image — the inactive root slot, or the UKI file — from its signed chunk index,
reusing the chunks this host already has and fetching only the others (docs/update-format.md §5).

Call order of :func:`assemble` (the caller has verified the index through TUF and checked that it
describes the signed image: :meth:`qx_update.chunkindex.ChunkIndex.check_describes`):

1. **plan** — for each chunk of the new index, in order, the first source that verifies (read, sha256,
   compared with the signed chunk hash): already in place in the target (the journal says a previous run
   wrote it, or the target's previous index puts the same chunk at the same offset); an earlier copy in
   the new image (written earlier in this pass); a *seed* — the running slot, the target's previous
   content, the running UKI — at an offset its previous index gives; else the chunk store;
2. **fetch** the missing chunks: a few requests in parallel over kept-alive connections, under one
   overall deadline (``download_deadline``, the slow-retrieval defence); each stored frame must have its
   signed length and sha256 before zstd decompresses a byte of it;
3. **one pass** in order: every chunk is verified again just before it is written at its offset (a
   fetched one after decompression, a reused one after re-reading it), so nothing unverified reaches the
   target; every SYNC_EVERY bytes the target and then the journal are synced. A fetched frame waits in
   the download cache (``<sha256>.chunk``) until the journal has its chunk, so after a kill -9 only the
   requests in flight (at most WORKERS) are made again; after a power cut, at most SYNC_EVERY's worth;
4. the caller reads the whole image back and compares it with the signed hash (the one extra pass).

Invariants: the running slot is only read. A seed in the target itself is used only from offsets the
pass has not written yet (at or after the chunk's own offset), so a reused chunk is never one this pass
overwrote. The previous indexes are hints, never trusted: a wrong one only costs a fetch. The journal
(``<downloads>/<image sha256>.<artifact>.journal``) is keyed by the signed image hash, so it never
describes another release, and it never runs ahead of the data it describes (the target is synced
first). Decompression runs in the image's ``zstd`` program (one process fed the frames in order; the
OS image needs no Python zstd module), through :func:`qx_common.run.spawn`.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import urllib3

from qx_common import log
from qx_common import run as r
from qx_common.errors import EnvironmentError_, ExternalError
from qx_common.fs import fsync_dir
from qx_common.progress import Observer, Progress
from qx_update import crashpoint
from qx_update.chunkindex import Chunk, ChunkIndex, chunk_path
from qx_update.deadline import DEFAULT_DEADLINE, Deadline
from qx_update.download import RETRIES, TIMEOUT, pool
from qx_update.errors import VerificationError

WORKERS = 4          # parallel chunk requests (kept-alive connections)
WINDOW = 8           # frames fetched ahead of the writer at most (each ≤ MAX_STORED_CHUNK_BYTES, in memory
                     # and in the download cache until written)
SYNC_EVERY = 4 << 20  # bytes written between syncs of the target and the journal
_log = log.get("update.chunked")

# Plan kinds
_PLACE, _COPY, _FETCH = "in-place", "copy", "fetch"


@dataclass(frozen=True)
class Seed:
    """A file or device this host already has, and the index of what it held when it was written."""

    path: Path
    index: ChunkIndex
    label: str


@dataclass
class Stats:
    chunks: int = 0
    fetched_chunks: int = 0
    fetched_bytes: int = 0        # stored (compressed) bytes downloaded
    reused_bytes: int = 0         # uncompressed bytes taken from seeds or already in place
    in_place_bytes: int = 0       # of those, bytes not even rewritten
    resumed_chunks: int = 0       # chunks a previous run had written (journal)
    cached_chunks: int = 0        # chunks a previous run had fetched, not yet journaled (download cache)
    sources: dict[str, int] = field(default_factory=dict)  # seed label -> bytes reused from it


class Journal:
    """Which chunks of one image are written in the target: an append-only file of chunk numbers.

    First line: ``{"format":1,"sha256":<image>}``; then one decimal chunk number per line. A line cut by a
    crash (no newline) is ignored; a file for another image is started over."""

    def __init__(self, path: Path, image_sha256: str) -> None:
        self.path = path
        self.header = json.dumps({"format": 1, "sha256": image_sha256}, sort_keys=True) + "\n"
        self.done: set[int] = set()
        self._pending: list[int] = []
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        except (OSError, UnicodeDecodeError):
            text = ""
        if text.startswith(self.header):
            for line in text[len(self.header):].split("\n")[:-1]:  # the last piece has no newline
                if line.isdigit():
                    self.done.add(int(line))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w") as f:
                f.write(self.header)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(path.parent)
        self._f = path.open("a")

    def add(self, i: int) -> None:
        self._pending.append(i)

    def sync(self, target_fd: int) -> None:
        """Make the target durable, then the chunks written to it: the journal never runs ahead."""
        if not self._pending:
            return
        os.fdatasync(target_fd)
        self._f.write("".join(f"{i}\n" for i in self._pending))
        self._f.flush()
        os.fsync(self._f.fileno())
        self.done.update(self._pending)
        self._pending.clear()

    def close(self) -> None:
        self._f.close()

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _read(fd: int, length: int, offset: int) -> bytes:
    data = os.pread(fd, length, offset)
    while len(data) < length:  # pread may return less on some devices; an early end is a short chunk
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


def _sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class _Fetcher:
    """GET stored chunk frames from ``base`` (the repository's targets URL, or a file:// directory)."""

    def __init__(self, base: str, deadline: Deadline, where: str, cache_dir: Path) -> None:
        self.base = base if base.endswith("/") else base + "/"
        self.deadline = deadline
        self.where = where
        self.cache_dir = cache_dir
        self.from_cache: set[str] = set()  # chunks a previous run had fetched (not fetched again)

    def cached(self, c: Chunk) -> Path:
        """A verified frame fetched but not yet written (kept across a kill: never fetched twice)."""
        return self.cache_dir / f"{c.sha256}.chunk"

    def get(self, c: Chunk) -> bytes:
        cache = self.cached(c)
        try:
            data = cache.read_bytes()
            if len(data) == c.stored_length and _sha(data) == c.stored_sha256:
                self.from_cache.add(c.sha256)
                return data
            cache.unlink()
        except FileNotFoundError:
            pass
        data = self._fetch(c)
        tmp = cache.with_suffix(f".tmp-{threading.get_ident()}")
        tmp.write_bytes(data)  # no fsync: it outlives a kill (page cache); after a power cut it is refetched
        os.replace(tmp, cache)
        return data

    def _fetch(self, c: Chunk) -> bytes:
        url = self.base + chunk_path(c.sha256)
        if url.startswith("file://"):
            try:
                with Path(unquote(urlparse(url).path)).open("rb") as f:
                    data = f.read(c.stored_length + 1)
            except FileNotFoundError as e:
                raise ExternalError(f"{self.where}: chunk {c.sha256} is not in the offline copy",
                                    hint="copy the whole repository (targets/chunks/ too), or use one with the "
                                         "full payload") from e
        else:
            data = self._http(url, c)
        if len(data) != c.stored_length or _sha(data) != c.stored_sha256:
            raise VerificationError(f"{self.where}: chunk {c.sha256} does not match the signed index "
                                    f"({len(data)} bytes; tampered chunk, or a chunk of another release): refused")
        return data

    def _http(self, url: str, c: Chunk) -> bytes:
        def send() -> urllib3.BaseHTTPResponse:
            resp = pool(url, WORKERS).request(
                "GET", url, headers={"User-Agent": "qx-update", "Accept-Encoding": "identity"},
                preload_content=False, retries=RETRIES, timeout=urllib3.Timeout(connect=TIMEOUT[0], read=TIMEOUT[1]))
            self.deadline.watch(resp)
            return resp

        try:
            resp = self.deadline.run(send)
            if resp is None:
                raise self.deadline.error()
            try:
                if resp.status != 200:
                    raise ExternalError(f"cannot download chunk {c.sha256} of {self.where}: HTTP {resp.status}",
                                        hint="check that the server or mirror serves targets/chunks/; "
                                             "the update resumes next time")
                # At most one byte more than signed: enough to see that it is too long (endless data).
                data = resp.read(c.stored_length + 1, decode_content=False)
            finally:
                resp.release_conn()
        except urllib3.exceptions.HTTPError as e:
            if self.deadline.expired:
                raise self.deadline.error() from e
            raise ExternalError(f"cannot download chunk {c.sha256} of {self.where}: {e}",
                                hint="check the network; the update resumes where it stopped") from e
        if self.deadline.expired:
            raise self.deadline.error()
        return data  # type: ignore[no-any-return]


def _plan(index: ChunkIndex, tfd: int, previous: ChunkIndex | None, journal: Journal,
          seeds: list[tuple[int, Seed]], stats: Stats) -> list[tuple[str, int, int, str]]:
    """(kind, fd, offset, seed label) per chunk; see the module's step 1."""
    at_offset: dict[int, str] = {}
    if previous is not None:
        at_offset = {c.offset: c.sha256 for c in previous.chunks}
    where: dict[str, list[tuple[int, int, int, str]]] = collections.defaultdict(list)  # sha -> (fd, off, len, label)
    for fd, seed in seeds:
        for c in seed.index.chunks:
            where[c.sha256].append((fd, c.offset, c.length, seed.label))
    first: dict[str, int] = {}
    plan: list[tuple[str, int, int, str]] = []
    for i, c in enumerate(index.chunks):
        if c.sha256 in first:
            plan.append((_COPY, tfd, first[c.sha256], "this image"))
            continue
        first[c.sha256] = c.offset
        if (i in journal.done or at_offset.get(c.offset) == c.sha256) and \
                _sha(_read(tfd, c.length, c.offset)) == c.sha256:
            if i in journal.done:
                stats.resumed_chunks += 1
            plan.append((_PLACE, tfd, c.offset, "in place"))
            continue
        for fd, off, n, label in where.get(c.sha256, ()):
            # The target's own old content only from where this pass has not written yet.
            if n != c.length or (fd == tfd and off < c.offset):
                continue
            if _sha(_read(fd, n, off)) == c.sha256:
                plan.append((_PLACE, tfd, off, "in place") if fd == tfd and off == c.offset
                            else (_COPY, fd, off, label))
                break
        else:
            plan.append((_FETCH, -1, 0, "fetched"))
    return plan


def assemble(index: ChunkIndex, target: Path, *, base_url: str, journal_path: Path, seeds: list[Seed],
             previous: ChunkIndex | None = None, label: str, progress: bool | Observer = True,
             deadline: float = DEFAULT_DEADLINE, where: str = "chunk index") -> Stats:
    """Write the image ``index`` describes into ``target`` (a slot, or a file created at its length).

    ``previous``: what ``target`` held before (a hint). ``seeds``: other sources (only read). The caller
    reads the result back against the signed hash, then calls :func:`done` to drop the journal."""
    stats = Stats(chunks=len(index.chunks))
    flags = os.O_RDWR | os.O_CLOEXEC | (0 if target.exists() else os.O_CREAT)
    try:
        tfd = os.open(target, flags, 0o600)
    except OSError as e:
        raise EnvironmentError_(f"cannot open {target} for writing: {e.strerror or e}") from e
    fds: list[int] = []
    journal: Journal | None = None
    try:
        size = os.lseek(tfd, 0, os.SEEK_END)
        if os.path.isfile(target):
            if size != index.length:
                os.ftruncate(tfd, index.length)
        elif size < index.length:
            raise VerificationError(f"the release needs {index.length} bytes but {target} has {size}")
        opened: list[tuple[int, Seed]] = []
        for s in seeds:
            try:
                fd = os.open(s.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                _log.warning("  %s: seed %s unreadable (%s); its chunks are fetched", label, s.path, e.strerror)
                continue
            fds.append(fd)
            opened.append((fd, s))
        if previous is not None:
            opened.append((tfd, Seed(target, previous, "previous content")))
        journal = Journal(journal_path, index.sha256)
        plan = _plan(index, tfd, previous, journal, opened, stats)
        _write(index, tfd, plan, journal, stats, base_url=base_url, label=label, progress=progress,
               deadline=deadline, where=where)
        os.fsync(tfd)
    finally:
        if journal is not None:
            journal.close()
        for fd in fds:
            os.close(fd)
        os.close(tfd)
    _log.info("  %s: %d chunks; fetched %d (%.1f MiB), reused %.1f MiB (%s)%s", label, stats.chunks,
              stats.fetched_chunks, stats.fetched_bytes / 2**20, stats.reused_bytes / 2**20,
              ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in stats.sources.items()) or "nothing",
              f", {stats.resumed_chunks} written before" if stats.resumed_chunks else "")
    return stats


def done(journal_path: Path) -> None:
    """The image was read back and verified: its journal is no longer needed."""
    journal_path.unlink(missing_ok=True)


def _write(index: ChunkIndex, tfd: int, plan: list[tuple[str, int, int, str]], journal: Journal, stats: Stats,
           *, base_url: str, label: str, progress: bool | Observer, deadline: float, where: str) -> None:
    missing = [c for c, p in zip(index.chunks, plan) if p[0] == _FETCH]
    fetch_total = sum(c.stored_length for c in missing)
    bar = Progress(f"writing {label}", index.length, enabled=progress)
    dl_bar = Progress(f"downloading {label} chunks", fetch_total, enabled=progress) if missing else None
    if not missing:
        _pass(index, tfd, plan, journal, stats, None, bar, None)
    else:
        zstd = r.require("zstd")
        feeder: _Feeder | None = None
        try:
            with Deadline(deadline, f"chunks of {where}") as dl, \
                    r.spawn([zstd, "-d", "-c", "-q"], stdin=r.PIPE, check=False) as proc:
                fetcher = _Fetcher(base_url, dl, where, journal.path.parent)
                feeder = _Feeder(fetcher, missing, proc)
                feeder.start()
                _pass(index, tfd, plan, journal, stats, proc, bar, dl_bar, fetcher)
                assert proc.stdout is not None
                if proc.stdout.read(1):
                    raise VerificationError(f"{where}: the fetched chunks decompress to more than signed: refused")
        except BaseException as e:
            # spawn() has killed zstd, so a feeder blocked on its pipe ends; its error is the real cause
            # of a short read (a refused chunk, HTTP, the deadline).
            if feeder is not None:
                feeder.stop()
                threading.Thread.join(feeder, 60)
                if feeder.error is not None and not isinstance(feeder.error, (BrokenPipeError, ValueError)):
                    raise feeder.error from e
            raise
        assert feeder is not None
        feeder.join()
        if proc.returncode != 0:
            raise ExternalError(f"zstd could not decompress the chunks of {where} (exit {proc.returncode}): "
                                f"{proc.stderr_text().strip()[-300:]}")
    journal.sync(tfd)
    bar.close()
    if dl_bar is not None:
        dl_bar.close()


class _Feeder(threading.Thread):
    """Fetch the missing frames (WORKERS at a time, WINDOW ahead) and feed them to zstd in order."""

    def __init__(self, fetcher: _Fetcher, missing: list[Chunk], proc: r.Process) -> None:
        super().__init__(name="qx-update-chunks", daemon=True)
        self.fetcher = fetcher
        self.missing = missing
        self.proc = proc
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            with cf.ThreadPoolExecutor(WORKERS, thread_name_prefix="qx-update-fetch") as ex:
                queue: collections.deque[cf.Future[bytes]] = collections.deque()
                todo = iter(self.missing)
                for c in todo:
                    queue.append(ex.submit(self.fetcher.get, c))
                    if len(queue) >= WINDOW:
                        break
                while queue and not self._halt.is_set():
                    frame = queue.popleft().result()
                    nxt = next(todo, None)
                    if nxt is not None:
                        queue.append(ex.submit(self.fetcher.get, nxt))
                    stdin.write(frame)
                for f in queue:
                    f.cancel()
        except BaseException as e:  # noqa: BLE001 - handed to the writing thread, raised there
            self.error = e
        finally:
            try:
                stdin.close()  # EOF: zstd flushes and exits; the writer sees a short read on an error
            except OSError:
                pass

    def stop(self) -> None:
        self._halt.set()

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error


def _read_exact(proc: r.Process, n: int) -> bytes:
    out = proc.stdout
    assert out is not None
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = out.readinto(view[got:])
        if not k:
            break
        got += k
    return bytes(buf[:got])


def _pass(index: ChunkIndex, tfd: int, plan: list[tuple[str, int, int, str]], journal: Journal, stats: Stats,
          proc: r.Process | None, bar: Progress, dl_bar: Progress | None, fetcher: _Fetcher | None = None) -> None:
    unsynced = 0
    cached: list[Path] = []
    for i, (c, (kind, fd, off, src)) in enumerate(zip(index.chunks, plan)):
        if kind == _PLACE:
            stats.reused_bytes += c.length
            stats.in_place_bytes += c.length
            stats.sources[src] = stats.sources.get(src, 0) + c.length
            if i not in journal.done:
                journal.add(i)
        elif kind == _COPY:
            data = _read(fd, c.length, off)
            if _sha(data) != c.sha256:
                # Verified when planned: it changed since (a disk error). Never written as is.
                raise VerificationError(f"chunk {i} ({src}, offset {off}) no longer matches its signed hash; "
                                        "run the update again (it fetches what it cannot reuse)")
            _pwrite_all(tfd, data, c.offset)
            stats.reused_bytes += c.length
            stats.sources[src] = stats.sources.get(src, 0) + c.length
            journal.add(i)
            unsynced += c.length
        else:
            assert proc is not None and dl_bar is not None
            data = _read_exact(proc, c.length)
            if len(data) != c.length or _sha(data) != c.sha256:
                raise VerificationError(f"chunk {i} ({c.sha256[:12]}…) decompressed to data that does not "
                                        "match the signed index: refused, nothing of it was written")
            _pwrite_all(tfd, data, c.offset)
            journal.add(i)
            unsynced += c.length
            assert fetcher is not None
            # Its frame stays in the download cache until the journal has the chunk: a crash before
            # then takes it from there, not from the network.
            cached.append(fetcher.cached(c))
            dl_bar.update(c.stored_length)
            if c.sha256 in fetcher.from_cache:
                stats.cached_chunks += 1
            else:
                stats.fetched_chunks += 1
                stats.fetched_bytes += c.stored_length
                crashpoint.reached(f"chunk-{stats.fetched_chunks}")
        if unsynced >= SYNC_EVERY:
            _sync(journal, tfd, cached)
            unsynced = 0
        bar.update(c.length)
    _sync(journal, tfd, cached)


def _sync(journal: Journal, tfd: int, cached: list[Path]) -> None:
    """Target first, then the journal; only then the cached frames of the journaled chunks go."""
    journal.sync(tfd)
    for p in cached:
        p.unlink(missing_ok=True)
    cached.clear()

