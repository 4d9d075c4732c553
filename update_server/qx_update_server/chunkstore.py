"""The chunk store of the repository: cut a release image into content-defined chunks, store each one
compressed under its hash, and write the image's chunk index (docs/update-format.md §5).

Layout (static files, served like every other target)::

    <data-dir>/repository/targets/chunks/<aa>/<sha256>.zst      one zstd frame per chunk, shared by releases
    <data-dir>/repository/targets/<version>/<sha256>.quantix-os_<version>.{root,efi}.chunks.json

Call order: :meth:`Repository.publish` calls :func:`build_index` for each artifact while it holds the
repository lock, *before* it signs (the index becomes a target of the release's role, so the chunks are
covered by the signature through it); a chunk file that was not there before is listed in ``written``,
so a publish that fails deletes it again; :func:`referenced` tells the garbage collector which chunks a
kept release still names (retention never deletes a chunk another release uses).

Invariants: a chunk file is written beside the store and renamed into place only once complete and
fsynced, so a store file is always a whole frame; a file already in the store is reused only after its
frame has been decompressed and hashed again (what is signed is what is on disk); the whole image's
length and sha256 must equal what the release signs, or nothing is kept.

Libraries: the cutting is pyfastcdc (FastCDC 2020, Cython), the compression zstandard — both only on
the publishing side; hosts need neither (they decompress with the image's ``zstd`` program).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from qx_common.errors import EnvironmentError_, InternalError, UserError
from qx_common.fs import fsync_dir
from qx_update.chunkindex import STORE_DIR, Chunk, ChunkIndex, chunk_path
from qx_update.contract import MAX_STORED_CHUNK_BYTES

# FastCDC 2020 with normalised chunking 1 and the paper's gear table: chunks of 16 KiB…256 KiB, about
# 80 KiB on average (pyfastcdc's ``avg_size`` excludes the skipped minimum). Between two releases that
# differ by one file, only the chunks that cover that file's bytes (and the erofs metadata that names
# it) change; smaller chunks would save a little per change but grow the index every host downloads.
MIN_SIZE = 16 * 1024
AVG_SIZE = 64 * 1024
MAX_SIZE = 256 * 1024
# zstd level 9: within 4 % of level 19's size on erofs/UKI data at ~10x its speed (measured on a
# 32 MiB sample of shared libraries: 0.383 vs 0.350 of the input, 36 vs 2.8 MB/s).
LEVEL = 9
CHUNKER = {"algorithm": "fastcdc-2020", "min_size": MIN_SIZE, "avg_size": AVG_SIZE, "max_size": MAX_SIZE,
           "normalization": 1, "seed": 0}
_READ = 4 << 20


def _libs() -> tuple[Any, Any]:
    try:
        import pyfastcdc
        import zstandard
    except ImportError as e:
        raise EnvironmentError_(f"publishing needs the chunking libraries: {e}",
                                hint="install the update server with its extra: pip install 'quantix-os[publish]' "
                                     "(requirements.lock has them)") from e
    return pyfastcdc, zstandard


class _Hashing:
    """A reader that hashes and counts what passes through it (the whole image's sha256)."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.length = 0

    def readinto(self, b: memoryview) -> int:
        n = self._f.readinto(b)  # type: ignore[attr-defined]
        if n:
            self.sha.update(b[:n])
            self.length += n
        return n or 0


def _stored(path: Path, zstd: Any, sha256: str, length: int) -> tuple[int, str] | None:
    """(length, sha256) of a chunk file already in the store, when it really holds chunk ``sha256``."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) <= MAX_STORED_CHUNK_BYTES:
        try:
            plain = zstd.ZstdDecompressor().decompress(data, max_output_size=length)
        except zstd.ZstdError:
            plain = b""
        if len(plain) == length and hashlib.sha256(plain).hexdigest() == sha256:
            return len(data), hashlib.sha256(data).hexdigest()
    # Damaged (a disk error, or a hand edit): replaced below by a fresh frame, never signed as is.
    return None


def _image_stream(path: Path, compressed: bool, zstd: Any) -> Iterator[IO[bytes]]:
    with path.open("rb") as raw:
        if compressed:
            with zstd.ZstdDecompressor().stream_reader(raw, read_size=_READ) as r:
                yield r  # type: ignore[misc]
        else:
            yield raw


def build_index(image: Path, *, compressed: bool, version: str, artifact: str, length: int, sha256: str,
                targets_dir: Path, staging: Path, written: list[Path]) -> ChunkIndex:
    """Cut ``image`` (zstd-compressed when ``compressed``: the root payload) into the store under
    ``targets_dir/chunks`` and return its index. ``length``/``sha256``: the image's signed values.
    New store files are appended to ``written`` (the caller deletes them if the publish fails)."""
    pyfastcdc, zstd = _libs()
    cdc = pyfastcdc.FastCDC(AVG_SIZE, min_size=MIN_SIZE, max_size=MAX_SIZE, normalized_chunking=1, seed=0)
    comp = zstd.ZstdCompressor(level=LEVEL, write_checksum=False, write_content_size=True)
    store = targets_dir / STORE_DIR
    staging.mkdir(parents=True, exist_ok=True)
    chunks: list[Chunk] = []
    dirs: set[Path] = set()
    offset = 0
    for stream in _image_stream(image, compressed, zstd):
        reader = _Hashing(stream)
        for c in cdc.cut_stream(reader):
            data = bytes(c.data)  # valid only until the next chunk is cut
            sha = hashlib.sha256(data).hexdigest()
            dest = targets_dir / chunk_path(sha)
            have = _stored(dest, zstd, sha, len(data))
            if have is None:
                frame = comp.compress(data)
                tmp = staging / f"{sha}.zst.tmp-{os.getpid()}"
                with tmp.open("wb") as f:
                    f.write(frame)
                    f.flush()
                    os.fsync(f.fileno())
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.exists():
                    written.append(dest)
                os.replace(tmp, dest)
                dirs.add(dest.parent)
                have = (len(frame), hashlib.sha256(frame).hexdigest())
            chunks.append(Chunk(offset, len(data), sha, have[0], have[1]))
            offset += len(data)
        if reader.length != length or reader.sha.hexdigest() != sha256:
            raise UserError(f"{image.name}: its {artifact} image is {reader.length} bytes with sha256 "
                            f"{reader.sha.hexdigest()}, the release signs {length} bytes, {sha256}",
                            hint="the manifest's uncompressed size/sha256 must be those of the payload qx-build wrote")
    for d in dirs:
        fsync_dir(d)
    if store.is_dir():
        fsync_dir(store)
    if not chunks:
        raise InternalError(f"{image.name}: no chunks (an empty image)")
    return ChunkIndex(version=version, artifact=artifact, length=length, sha256=sha256, chunks=tuple(chunks),
                      chunker=dict(CHUNKER))


# Index files are named by their own sha256 (``<sha256>.quantix-os_<v>.*.chunks.json``), so a name always
# holds the same content: each is parsed once per process, not at every publish's garbage collection.
_REFS: dict[str, frozenset[str]] = {}


def referenced(index_files: list[Path]) -> set[str]:
    """The chunk hashes the given index files name (unreadable ones name none: their release's files
    are damaged anyway, and repair reports that)."""
    out: set[str] = set()
    seen = set()
    for p in index_files:
        key = str(p)
        seen.add(key)
        refs = _REFS.get(key)
        if refs is None:
            try:
                idx = ChunkIndex.from_json(p.read_bytes(), key)
            except (OSError, UserError):
                continue
            refs = _REFS[key] = frozenset(c.sha256 for c in idx.chunks)
        out |= refs
    for key in set(_REFS) - seen:  # files gone (their releases retired): forget them
        del _REFS[key]
    return out


def gc(targets_dir: Path, keep: set[str]) -> int:
    """Delete the store's chunk files no kept index names; returns how many went."""
    store = targets_dir / STORE_DIR
    if not store.is_dir():
        return 0
    gone = 0
    for sub in store.iterdir():
        if not sub.is_dir():
            sub.unlink(missing_ok=True)
            continue
        for f in sub.iterdir():
            name = f.name
            if not (name.endswith(".zst") and name[:-4] in keep):
                f.unlink(missing_ok=True)
                gone += 1
        if gone:
            try:
                sub.rmdir()  # only if now empty
            except OSError:
                pass
    if gone:
        try:
            store.rmdir()
        except OSError:
            pass
    return gone
