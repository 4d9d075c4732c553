"""A release image's chunk index (docs/update-format.md §5): the format, read and written in one place.

An index describes one image — the root slot's erofs bytes or the UKI — as the sequence of its
content-defined chunks: each chunk's uncompressed length and sha256, and the length and sha256 of its
stored form (one zstd frame, ``targets/chunks/<aa>/<sha256>.zst``). It also states the whole image's
length and sha256, which must be the release's signed ``slot_size``/``slot_sha256`` (root) or the signed
UKI target's length/hash (:meth:`ChunkIndex.check_describes`). The index file itself is a TUF target of
the release's role, so a host that has verified it through ngclient can verify every chunk it fetches
or reuses against signed data.

Invariants: :meth:`ChunkIndex.from_json` ∘ :meth:`ChunkIndex.to_json` is the identity; anything
``from_json`` accepts is within the contract's bounds (``qx_update.contract.MAX_*``), has chunks that
tile ``[0, length)`` exactly, and names stores only by their hash (so a path cannot escape the chunk
store). A bad field is a :class:`qx_update.contract.ContractError` naming it.

Pure: no I/O; the server (``qx_update_server.chunkstore``) writes indexes with :meth:`to_json`, the
client (:mod:`qx_update.chunked`) reads them with :meth:`from_json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from qx_update.contract import (INDEX_OF, MAX_CHUNK_BYTES, MAX_CHUNKS, MAX_INDEX_BYTES, MAX_SLOT_SIZE,
                                MAX_STORED_CHUNK_BYTES, ContractError, check_int, check_sha256, check_version)

FORMAT = 1
COMPRESSION = "zstd"
STORE_DIR = "chunks"  # under the repository's targets/ base URL


def chunk_path(sha256: str) -> str:
    """Where a chunk is stored, relative to the targets base URL: ``chunks/<aa>/<sha256>.zst``."""
    return f"{STORE_DIR}/{sha256[:2]}/{sha256}.zst"


@dataclass(frozen=True)
class Chunk:
    offset: int          # in the image (implied by the order: the sum of the lengths before it)
    length: int          # uncompressed bytes
    sha256: str          # of the uncompressed bytes: the chunk's name in the store
    stored_length: int   # bytes of the stored zstd frame
    stored_sha256: str   # of the stored frame: checked before a byte of it is decompressed


@dataclass(frozen=True)
class ChunkIndex:
    version: str
    artifact: str                     # "root" or "uki": which image of the release
    length: int
    sha256: str
    chunks: tuple[Chunk, ...]
    chunker: dict[str, Any] = field(default_factory=dict)  # how the server cut it (informative only)

    def to_json(self) -> bytes:
        doc = {"format": FORMAT, "version": self.version, "artifact": self.artifact, "length": self.length,
               "sha256": self.sha256, "compression": COMPRESSION, "chunker": self.chunker,
               "chunks": [[c.length, c.sha256, c.stored_length, c.stored_sha256] for c in self.chunks]}
        # One chunk per line: small diffs between releases' indexes, readable in a pager.
        head = json.dumps({k: v for k, v in doc.items() if k != "chunks"}, sort_keys=True, separators=(",", ":"))
        lines = ",\n".join(json.dumps(c, separators=(",", ":")) for c in doc["chunks"])
        return (head[:-1] + ',"chunks":[\n' + lines + "\n]}\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str = "chunk index") -> ChunkIndex:
        if len(data) > MAX_INDEX_BYTES:
            raise ContractError(f"{where}: {len(data)} bytes is over the limit of {MAX_INDEX_BYTES}")
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ContractError(f"{where}: not JSON ({e})") from e
        if not isinstance(doc, dict):
            raise ContractError(f"{where}: must be an object")
        if doc.get("format") != FORMAT:
            raise ContractError(f"{where}: format: {doc.get('format')!r} is not {FORMAT}",
                                hint="a newer server wrote it; this host falls back to the full payload")
        if doc.get("compression") != COMPRESSION:
            raise ContractError(f"{where}: compression: {doc.get('compression')!r} is not {COMPRESSION!r}")
        artifact = doc.get("artifact")
        if artifact not in INDEX_OF:
            raise ContractError(f"{where}: artifact: {artifact!r} is not one of {', '.join(INDEX_OF)}")
        length = check_int(doc.get("length"), f"{where}: length", 1, MAX_SLOT_SIZE)
        sha = check_sha256(doc.get("sha256"), f"{where}: sha256")
        chunker = doc.get("chunker", {})
        if not isinstance(chunker, dict):
            raise ContractError(f"{where}: chunker: must be an object")
        raw = doc.get("chunks")
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CHUNKS:
            raise ContractError(f"{where}: chunks: must be a list of 1 to {MAX_CHUNKS} chunks")
        chunks = []
        offset = 0
        for i, c in enumerate(raw):
            f = f"{where}: chunks[{i}]"
            if not isinstance(c, list) or len(c) != 4:
                raise ContractError(f"{f}: must be [length, sha256, stored_length, stored_sha256]")
            n = check_int(c[0], f"{f}.length", 1, MAX_CHUNK_BYTES)
            chunks.append(Chunk(offset, n, check_sha256(c[1], f"{f}.sha256"),
                                check_int(c[2], f"{f}.stored_length", 1, MAX_STORED_CHUNK_BYTES),
                                check_sha256(c[3], f"{f}.stored_sha256")))
            offset += n
        if offset != length:
            raise ContractError(f"{where}: the chunks add up to {offset} bytes, the image is {length}")
        return cls(version=check_version(doc.get("version"), f"{where}: version"), artifact=artifact,
                   length=length, sha256=sha, chunks=tuple(chunks), chunker=chunker)

    def check_describes(self, *, version: str, artifact: str, length: int, sha256: str, where: str) -> None:
        """The index must describe exactly the signed image it stands beside (else a mix-and-match)."""
        if (self.version, self.artifact, self.length, self.sha256) != (version, artifact, length, sha256):
            raise ContractError(f"{where}: describes {self.artifact} {self.version} ({self.length} bytes, "
                                f"sha256 {self.sha256[:12]}…), not the signed {artifact} of {version} "
                                f"({length} bytes, sha256 {sha256[:12]}…)")

    def unique_stored_bytes(self) -> int:
        seen: set[str] = set()
        total = 0
        for c in self.chunks:
            if c.sha256 not in seen:
                seen.add(c.sha256)
                total += c.stored_length
        return total
