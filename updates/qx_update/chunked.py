"""Delta updates: build an image — the inactive root slot, or the UKI file — from its signed chunk index,
reusing the chunks this host already has and fetching only the others (docs/update-format.md §5).

Call order of :func:`assemble` (the caller has verified the index through TUF and checked that it
describes the signed image: :meth:`qx_update.chunkindex.ChunkIndex.check_describes`):

1. **plan** — for each chunk of the new index, in order, the first source that verifies (read, sha256,
   compared with the signed chunk hash): already in place in the target (the journal says a previous run
   wrote it, or the target's previous index puts the same chunk at the same offset); an earlier copy in
   the new image (written earlier in this pass); a *seed* — the running slot, the target's previous
   content, the running UKI — at an offset its previous index gives; else the chunk store;
   then **choose the path** by bytes (:func:`choose`): fetching the missing chunks costs their stored
   bytes plus :data:`REQUEST_BYTES` (64 KiB) per request; when that is at least the whole signed target
   (the root's zstd payload, the UKI file), the image is taken as **one stream** instead (step 2'), else
   as a **delta** (steps 2, 3). The log says which: ``<label>: plan: delta|full-stream — …`` (label
   ``slot`` or ``uki``), and so does the apply's message (``root by delta``, ``uki by full-stream``).
   Why 64 KiB a request: measured, a fetched chunk costs about 2 ms of the client's CPU beyond its bytes
   (a request, two hashes, a cache file, a pwrite: 11 s of CPU for 5,200 chunks, docs/performance.md),
   which is 64 KiB of transfer at 250 Mbit/s;
   over a WAN a request also costs a round trip (20 ms over 4 parallel connections ≈ 5 ms ≈ 64 KiB at
   100 Mbit/s). So a host with no seed (every chunk missing) streams — one GET instead of thousands —
   and a one-package change (a few hundred chunks of thousands) stays a delta on any link;
2. **fetch** the missing chunks: a few requests in parallel over kept-alive connections, under one
   overall deadline (``download_deadline``, the slow-retrieval defence); each stored frame must have its
   signed length and sha256 before zstd decompresses a byte of it;
3. **one pass** in order: every chunk is verified again just before it is written at its offset (a
   fetched one after decompression, a reused one after re-reading it), so nothing unverified reaches the
   target; every SYNC_EVERY bytes the target and then the journal are synced. A fetched frame waits in
   the download cache (``<sha256>.chunk``) until the journal has its chunk, so after a kill -9 only the
   requests in flight (at most WORKERS) are made again; after a power cut, at most SYNC_EVERY's worth;
2'. **stream** (:func:`_stream`): one GET of the whole target (under the same deadline, capped at its
   signed length, hashed as it arrives and compared with its signed hash at the end), decompressed by
   one ``zstd`` process; the output is read in batches of whole chunks (≥ STREAM_BATCH), each chunk
   hashed on a memoryview of the batch and compared with the signed index *before* the batch is written
   (one pwrite per run of chunks; chunks already in place are not rewritten); the journal as in step 3,
   every STREAM_SYNC_EVERY bytes. zstd parses bytes not yet verified here (the chunk path verifies each
   frame first): a wrong or hostile payload can make zstd fail or produce other bytes, never make an
   unverified byte reach the target. After a kill -9 the rerun plans again: the journaled chunks are in
   place (re-hashed), and the rest is fetched as chunks or streamed again (from the start: a zstd stream
   cannot be entered in the middle; chunks in place are skipped, not rewritten);
4. the whole image is read back from the disk and compared with the signed hash (the one extra read):
   by the caller after the pass, or (``read_back=True``) by :class:`qx_update.slots.ReadBack` behind the pass, each
   prefix as soon as the journal has made it durable.

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
import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import urllib3

from qx_common import log
from qx_common import run as r
from qx_common.errors import EnvironmentError_, ExternalError
from qx_common.fs import fsync_dir
from qx_common.progress import Observer, Progress
from qx_update import crashpoint, slots
from qx_update.chunkindex import Chunk, ChunkIndex, chunk_path
from qx_update.deadline import DEFAULT_DEADLINE, Deadline
from qx_update.download import RETRIES, TIMEOUT, pool
from qx_update.errors import VerificationError

WORKERS = 4          # parallel chunk requests (kept-alive connections)
WINDOW = 8           # frames fetched ahead of the writer at most (each ≤ MAX_STORED_CHUNK_BYTES, in memory
                     # and in the download cache until written)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# Bytes written between syncs of the target and the journal (both paths): a 408 MiB slot is 13 syncs, not
# the 100 of 4 MiB (each an fdatasync of the slot and an fsync of the journal; profiled: a delta's pass
# 4.7 s -> 2.7 s, one run each on the shared machine: noisy). A power cut costs at most this much
# writing again, and the frames fetched in it.
SYNC_EVERY = 32 << 20
# The planner's price of one chunk request, in bytes of transfer (see the module docstring, "Which path").
REQUEST_BYTES = 64 << 10
STREAM_BATCH = 4 << 20        # stream path: whole chunks read, verified and written at a time (≥ this)
STREAM_SYNC_EVERY = SYNC_EVERY
DELTA, STREAM = "delta", "full-stream"  # the two paths (Stats.path; the log line "<label>: plan: <path> …")
CACHED = "cached"  # Stats.path of an image already whole and verified in the download cache (nothing planned)
_log = log.get("update.chunked")

# Plan kinds
_PLACE, _COPY, _FETCH = "in-place", "copy", "fetch"


@dataclass(frozen=True)
class Seed:
    """A file or device this host already has, and the index of what it held when it was written."""

    path: Path
    index: ChunkIndex
    label: str


@dataclass(frozen=True)
class Full:
    """The image's whole signed target, for the stream path: the root payload (zstd) or the UKI file."""

    url: str
    length: int        # signed length of the target (the compressed payload for the root)
    sha256: str        # signed sha256 of the target
    compressed: bool   # True: a zstd stream of the image; False: the image itself


@dataclass
class Stats:
    path: str = DELTA             # DELTA or STREAM: what the planner chose
    chunks: int = 0
    fetched_chunks: int = 0
    fetched_bytes: int = 0        # stored (compressed) bytes downloaded
    reused_bytes: int = 0         # uncompressed bytes taken from seeds or already in place
    in_place_bytes: int = 0       # of those, bytes not even rewritten
    resumed_chunks: int = 0       # chunks a previous run had written (journal)
    cached_chunks: int = 0        # chunks a previous run had fetched, not yet journaled (download cache)
    sources: dict[str, int] = field(default_factory=dict)  # seed label -> bytes reused from it
    read_back_sha256: str = ""    # assemble(read_back=True): the image's sha256 as read back from the disk


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
        self.on_durable: Callable[[int], None] | None = None  # told each new durable prefix (slots.ReadBack)

    def add(self, i: int) -> None:
        self._pending.append(i)

    def sync(self, target_fd: int, upto: int) -> None:
        """Make the target durable, then the chunks written to it: the journal never runs ahead.
        ``upto``: the pass is done with every byte of the image before it (written or in place)."""
        if self._pending:
            os.fdatasync(target_fd)
            self._f.write("".join(f"{i}\n" for i in self._pending))
            self._f.flush()
            os.fsync(self._f.fileno())
            self.done.update(self._pending)
            self._pending.clear()
        if self.on_durable is not None:
            self.on_durable(upto)

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


def choose(index: ChunkIndex, plan: list[tuple[str, int, int, str]], full: Full | None) -> tuple[str, int]:
    """(path, estimated bytes of the chunk path): STREAM when fetching the missing chunks would cost at
    least as much as the whole target — their stored bytes plus :data:`REQUEST_BYTES` per request."""
    missing = [c for c, p in zip(index.chunks, plan) if p[0] == _FETCH]
    cost = sum(c.stored_length for c in missing) + len(missing) * REQUEST_BYTES
    if full is not None and missing and cost >= full.length:
        return STREAM, cost
    return DELTA, cost


def assemble(index: ChunkIndex, target: Path, *, base_url: str, journal_path: Path, seeds: list[Seed],
             previous: ChunkIndex | None = None, label: str, progress: bool | Observer = True,
             deadline: float = DEFAULT_DEADLINE, where: str = "chunk index", full: Full | None = None,
             read_back: bool = False) -> Stats:
    """Write the image ``index`` describes into ``target`` (a slot, or a file created at its length).

    ``previous``: what ``target`` held before (a hint). ``seeds``: other sources (only read). ``full``:
    the image's whole target, taken as one stream when the plan says so (None: chunks only). The caller
    reads the result back against the signed hash — ``read_back``: done here, behind the pass
    (:class:`qx_update.slots.ReadBack`), into :attr:`Stats.read_back_sha256` — then calls :func:`done` to drop the journal."""
    stats = Stats(chunks=len(index.chunks))
    flags = os.O_RDWR | os.O_CLOEXEC | (0 if target.exists() else os.O_CREAT)
    try:
        tfd = os.open(target, flags, 0o600)
    except OSError as e:
        raise EnvironmentError_(f"cannot open {target} for writing: {e.strerror or e}") from e
    fds: list[int] = []
    journal: Journal | None = None
    reader: slots.ReadBack | None = None
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
        if read_back:
            reader = slots.ReadBack(target, index.length, label=label, progress=progress)
            journal.on_durable = reader.advance
            reader.start()
        stats.path, cost = choose(index, plan, full)
        missing = sum(1 for p in plan if p[0] == _FETCH)
        here = sum(c.length for c, p in zip(index.chunks, plan) if p[0] != _FETCH)
        # The line an operator (and the OTA e2e) reads to know how the image was taken.
        _log.info("  %s: plan: %s — %d of %d chunks to fetch (≈%.1f MB with requests) vs the whole %s "
                  "(%.1f MB); %.0f %% of the image is here already", label, stats.path, missing,
                  len(index.chunks), cost / 1e6, "target" if full is not None else "target (not offered)",
                  (full.length if full is not None else 0) / 1e6, 100 * here / index.length)
        if stats.path == STREAM:
            assert full is not None
            try:
                _stream(index, tfd, plan, journal, stats, full, label=label, progress=progress,
                        deadline=deadline, where=where)
            except _NotServed as e:
                # Nothing was written (the GET was refused before its body): a mirror or an offline copy
                # with the chunk store but not the whole target. The chunks are the other way.
                _log.warning("  %s: %s; taking the chunks instead", label, e.__cause__)
                stats.path = DELTA
                _write(index, tfd, plan, journal, stats, base_url=base_url, label=label, progress=progress,
                       deadline=deadline, where=where)
        else:
            _write(index, tfd, plan, journal, stats, base_url=base_url, label=label, progress=progress,
                   deadline=deadline, where=where)
        os.fsync(tfd)
        if reader is not None:
            reader, r_ = None, reader
            stats.read_back_sha256 = r_.digest()
    finally:
        if reader is not None:
            reader.stop()  # the pass failed: the reader stops where it is
        if journal is not None:
            journal.close()
        for fd in fds:
            os.close(fd)
        os.close(tfd)
    _log.info("  %s: %s, %d chunks; fetched %d (%.1f MiB), reused %.1f MiB (%s)%s", label, stats.path,
              stats.chunks, stats.fetched_chunks, stats.fetched_bytes / 2**20, stats.reused_bytes / 2**20,
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
    journal.sync(tfd, index.length)
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
                stats.reused_bytes += c.length   # fetched by an interrupted earlier run, not by this one
            else:
                stats.fetched_chunks += 1
                stats.fetched_bytes += c.stored_length
                crashpoint.reached(f"chunk-{stats.fetched_chunks}")
        if unsynced >= SYNC_EVERY:
            _sync(journal, tfd, cached, c.offset + c.length)
            unsynced = 0
        bar.update(c.length)
    _sync(journal, tfd, cached, index.length)


def _sync(journal: Journal, tfd: int, cached: list[Path], upto: int) -> None:
    """Target first, then the journal; only then the cached frames of the journaled chunks go."""
    journal.sync(tfd, upto)
    for p in cached:
        p.unlink(missing_ok=True)
    cached.clear()



# -- the stream path -------------------------------------------------------------------------------------
class _NotServed(Exception):
    """The whole target is not served (HTTP 4xx, or missing from an offline copy): nothing was written."""


class _BodyFeeder(threading.Thread):
    """Copy the target's body into ``out_fd`` (zstd's stdin, or a pipe), counting its bytes against the
    signed length and hashing them; the writing thread checks :attr:`got` and :attr:`digest` at the end."""

    def __init__(self, body: Iterator[bytes], out_fd: int, full: Full) -> None:
        super().__init__(name="qx-update-stream", daemon=True)
        self.body = body
        self.out_fd = out_fd
        self.full = full
        self.got = 0
        self.digest = ""
        self.error: BaseException | None = None

    def _blocks(self) -> Iterator[bytes]:
        try:
            yield from self.body
        except urllib3.exceptions.HTTPError as e:
            raise ExternalError(f"download of {self.full.url} interrupted at {self.got} bytes: {e}",
                                hint="run the update again: it continues from what was written") from e

    def run(self) -> None:
        h = hashlib.sha256()
        try:
            for block in self._blocks():
                self.got += len(block)
                if self.got > self.full.length:
                    raise VerificationError(f"{self.full.url}: the server sent more than the signed "
                                            f"{self.full.length} bytes (endless-data attack); stopped")
                h.update(block)  # GIL released: beside zstd and the writer
                view = memoryview(block)
                while view:
                    view = view[os.write(self.out_fd, view):]
            self.digest = h.hexdigest()
        except BaseException as e:  # noqa: BLE001 - handed to the writing thread, raised there
            self.error = e
        finally:
            close = getattr(self.body, "close", None)
            if close:
                close()
            try:
                os.close(self.out_fd)  # EOF for the reader (zstd flushes and exits)
            except OSError:
                pass


def _readinto_exact(fd: int, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if not n:
            break
        got += n
    return got


def _stream(index: ChunkIndex, tfd: int, plan: list[tuple[str, int, int, str]], journal: Journal, stats: Stats,
            full: Full, *, label: str, progress: bool | Observer, deadline: float, where: str) -> None:
    """One GET of the whole target, decompressed as it arrives; each chunk of the output is verified
    against the signed index before it is written (in batches of whole chunks, one pwrite per run)."""
    from qx_update import download  # the artifact downloader's HTTP/file:// body, deadline, pool

    bar = Progress(f"writing {label}", index.length, enabled=progress)
    dl_bar = Progress(f"downloading {label} (whole target)", full.length, enabled=progress)
    with Deadline(deadline, f"{where}: the whole {label} target") as dl:
        try:
            body = download.open_body(full.url, dl)
        except download.NotServed as e:
            raise _NotServed() from e
        feeder: _BodyFeeder | None = None
        with contextlib.ExitStack() as stack:
            if full.compressed:
                proc = stack.enter_context(r.spawn([r.require("zstd"), "-d", "-c", "-q"], stdin=r.PIPE,
                                                   check=False))
                assert proc.stdin is not None and proc.stdout is not None
                # The feeder owns (and closes) a duplicate of zstd's stdin; ours is closed now.
                wfd = os.dup(proc.stdin.fileno())
                proc.stdin.close()
                rfd = proc.stdout.fileno()
            else:
                proc = None
                rfd, wfd = os.pipe()
                reader = os.fdopen(rfd, "rb", buffering=0)  # closed once, on error early, else at the end
                stack.callback(reader.close)
            for fd in (rfd, wfd):
                try:
                    fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)  # fewer wake-ups between the threads
                except OSError:
                    pass
            feeder = _BodyFeeder(body, wfd, full)
            feeder.start()
            try:
                _stream_pass(index, tfd, plan, journal, stats, rfd, bar, where, feeder, dl_bar, label)
                if os.read(rfd, 1):
                    raise VerificationError(f"{where}: the whole target decompresses to more than the "
                                            f"signed {index.length} bytes: refused")
            except BaseException as e:
                # Killing zstd (or closing our end of the pipe) ends a feeder blocked on it; its error
                # (HTTP, endless data) or the deadline is the real cause of a short read.
                if proc is not None:
                    proc.kill()
                else:
                    reader.close()
                feeder.join(60)
                if dl.expired:
                    raise dl.error(feeder.got) from e
                if feeder.error is not None and not isinstance(feeder.error, OSError):
                    raise feeder.error from e
                raise
            feeder.join()
        if proc is not None and proc.returncode != 0:
            raise ExternalError(f"zstd could not decompress the whole {label} target of {where} "
                                f"(exit {proc.returncode}): {proc.stderr_text().strip()[-300:]}")
        if feeder.error is not None:
            if dl.expired:
                raise dl.error(feeder.got) from feeder.error
            raise feeder.error
        if dl.expired and feeder.got < full.length:
            raise dl.error(feeder.got)
    if feeder.got != full.length or feeder.digest != full.sha256:
        # Every chunk written was verified, so the slot is right; the target itself is not what was signed.
        raise VerificationError(f"{full.url}: the whole target does not match its signed length or hash "
                                f"({feeder.got} of {full.length} bytes): refused")
    stats.fetched_bytes += feeder.got
    journal.sync(tfd, index.length)
    bar.close()
    dl_bar.close()


def _first_bad(buf: memoryview, chunks: tuple[Chunk, ...], plan: list[tuple[str, int, int, str]], i: int,
               j: int) -> int | None:
    """The first chunk of ``chunks[i:j]`` (read into ``buf``) to be written whose hash is not the signed one."""
    base = chunks[i].offset
    for k in range(i, j):
        c = chunks[k]
        if plan[k][0] != _PLACE and hashlib.sha256(buf[c.offset - base:c.offset - base + c.length]).hexdigest() \
                != c.sha256:
            return k
    return None


def _stream_pass(index: ChunkIndex, tfd: int, plan: list[tuple[str, int, int, str]], journal: Journal,
                 stats: Stats, rfd: int, bar: Progress, where: str, feeder: _BodyFeeder, dl_bar: Progress,
                 label: str) -> None:
    """Batches of whole chunks (≥ STREAM_BATCH bytes): batch k is verified in a worker thread (hashlib
    releases the GIL) while this thread reads batch k+1 from zstd; then batch k is written — one pwrite
    per run of chunks not already in place — and journaled. Nothing is written before it is verified."""
    chunks = index.chunks
    n = len(chunks)
    state = {"unsynced": 0, "batches": 0}

    def read(i: int) -> tuple[int, int, memoryview]:
        j, size = i, 0
        while j < n and size < STREAM_BATCH:
            size += chunks[j].length
            j += 1
        buf = memoryview(bytearray(size))  # a fresh buffer per batch: the worker may still hash the last
        if _readinto_exact(rfd, buf) != size:
            raise VerificationError(f"{where}: the whole target ended before the image did (at chunk {i}): "
                                    "refused, nothing past the last verified chunk was written")
        return i, j, buf

    def finish(i: int, j: int, buf: memoryview, bad: int | None) -> None:
        if bad is not None:
            raise VerificationError(f"{where}: chunk {bad} of the whole target does not match the signed "
                                    "index (tampered target): refused, nothing of it was written")
        base = chunks[i].offset
        run_start: int | None = None  # offset in buf of the run of chunks to write
        for k in range(i, j + 1):
            if k < j and plan[k][0] != _PLACE:
                if run_start is None:
                    run_start = chunks[k].offset - base
                journal.add(k)
                continue
            if run_start is not None:  # a chunk in place (verified when planned: not rewritten), or the end
                end = chunks[k].offset - base if k < j else len(buf)
                _pwrite_all(tfd, buf[run_start:end], base + run_start)
                run_start = None
            if k < j:
                c = chunks[k]
                stats.reused_bytes += c.length
                stats.in_place_bytes += c.length
                stats.sources["in place"] = stats.sources.get("in place", 0) + c.length
                if k not in journal.done:
                    journal.add(k)
        state["unsynced"] += len(buf)
        bar.update(len(buf))
        dl_bar.update(feeder.got - dl_bar.done)  # from this thread: progress events stay whole lines
        state["batches"] += 1
        point = f"stream-{label}-{state['batches']}"
        if state["unsynced"] >= STREAM_SYNC_EVERY or crashpoint.armed(point):
            journal.sync(tfd, base + len(buf))
            state["unsynced"] = 0
        crashpoint.reached(point)

    with cf.ThreadPoolExecutor(1, thread_name_prefix="qx-update-verify") as pool:
        pending: tuple[int, int, memoryview, cf.Future[int | None]] | None = None
        i = 0
        while i < n or pending is not None:
            nxt = None
            if i < n:
                try:
                    bi, bj, buf = read(i)
                except VerificationError:
                    if pending is not None and pending[3].result() is not None:
                        finish(*pending[:3], pending[3].result())  # the earlier refusal is the cause
                    raise
                nxt = (bi, bj, buf, pool.submit(_first_bad, buf, chunks, plan, bi, bj))
                i = bj
            if pending is not None:
                pi, pj, pbuf, fut = pending
                finish(pi, pj, pbuf, fut.result())
            pending = nxt
