"""qx_build.hashing.sha256_file on real sparse files: holes found with SEEK_DATA/SEEK_HOLE and hashed from a
buffer of zeros give the digest of the file's bytes, wherever holes and data lie (at either end, unaligned,
around the 4 MiB chunk), for the whole file, a prefix of it (``limit``) or a slice (``offset``), with or
without a progress bar; a file shorter than asked for is an error."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from qx_build import hashing
from qx_build.hashing import CHUNK, sha256_file
from qx_common.errors import ExternalError

pytestmark = pytest.mark.timeout(60)  # a region loop that never ends fails here, not after the suite's 900 s

KIB = 1024
MIB = 1024 * KIB


def _sparse(path: Path, size: int, pieces: list[tuple[int, int]], seed: int = 1) -> Path:
    """A file of ``size`` bytes, holes but for ``pieces`` of (offset, length) random bytes."""
    rnd = random.Random(seed)
    with path.open("wb") as f:
        f.truncate(size)
        for offset, length in pieces:
            f.seek(offset)
            f.write(rnd.randbytes(length))
    assert path.stat().st_size == size
    return path


def _has_hole(path: Path) -> bool:
    with path.open("rb") as f:
        return any(not data for _, _, data in hashing._regions(f.fileno(), 0, path.stat().st_size))


# name: (size, data pieces)
LAYOUTS: dict[str, tuple[int, list[tuple[int, int]]]] = {
    "empty": (0, []),
    "data-hole-data": (3 * MIB, [(0, 5000), (3 * MIB - 7000, 7000)]),
    "all-hole": (2 * CHUNK + 17, []),
    "no-hole": (MIB + 5, [(0, MIB + 5)]),
    "data-larger-than-chunk": (CHUNK + 3 * MIB, [(0, CHUNK + 3 * MIB)]),
    "hole-to-eof-aligned": (8 * MIB, [(0, 4 * KIB)]),
    "hole-to-eof-unaligned": (8 * MIB + 123, [(0, 4 * KIB)]),
    "hole-at-start": (MIB + 1, [(MIB - 100, 101)]),
    "unaligned-bits": (2 * MIB + 3, [(4097, 3), (12345, 10), (70000, 8191), (2 * MIB - 1, 4)]),
    "chunk-minus-one": (CHUNK - 1, [(0, 1), (CHUNK - 2, 1)]),
    "chunk-exact": (CHUNK, [(CHUNK - 4 * KIB, 4 * KIB)]),
    "chunk-plus-one": (CHUNK + 1, [(CHUNK, 1)]),
    "data-across-chunk": (2 * CHUNK, [(CHUNK - 2, 4), (CHUNK + 5 * MIB // 2, 3)]),
    "hole-longer-than-chunk": (3 * CHUNK + 10, [(0, 1), (3 * CHUNK + 9, 1)]),
}
SPARSE = {name for name, (size, pieces) in LAYOUTS.items() if size > sum(n for _, n in pieces)}


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    size, pieces = LAYOUTS[request.param]
    path = _sparse(tmp_path / f"{request.param}.img", size, pieces)
    if request.param in SPARSE:  # the hole path is what is under test: the file system must report one
        assert _has_hole(path), "tmp_path's file system reports no holes"
    return path


def test_whole_file_equals_hashlib(layout: Path) -> None:
    assert sha256_file(layout) == hashlib.sha256(layout.read_bytes()).hexdigest()


def test_regions_cover_the_file_in_order(layout: Path) -> None:
    size = layout.stat().st_size
    with layout.open("rb") as f:
        regions = list(hashing._regions(f.fileno(), 0, size))
    data = layout.read_bytes()
    pos = 0
    for offset, length, has_data in regions:
        assert offset == pos and length > 0
        if not has_data:
            assert data[offset:offset + length] == bytes(length)
        pos += length
    assert pos == size


def test_holes_are_found_not_read(tmp_path: Path) -> None:
    """The regions sha256_file works from: holes where the file has them (block-rounded), to EOF included."""
    hole = _sparse(tmp_path / "hole.img", 2 * CHUNK + 17, [])
    with hole.open("rb") as f:
        assert list(hashing._regions(f.fileno(), 0, 2 * CHUNK + 17)) == [(0, 2 * CHUNK + 17, False)]
    mixed = _sparse(tmp_path / "mixed.img", 3 * MIB, [(0, 5000), (3 * MIB - 7000, 7000)])
    with mixed.open("rb") as f:
        regions = list(hashing._regions(f.fileno(), 0, 3 * MIB))
    assert [r[2] for r in regions] == [True, False, True]
    assert regions[1][0] <= 64 * KIB and regions[1][0] + regions[1][1] >= 3 * MIB - 7000 - 64 * KIB
    tail = _sparse(tmp_path / "tail.img", 8 * MIB + 123, [(0, 4 * KIB)])
    with tail.open("rb") as f:
        assert list(hashing._regions(f.fileno(), 0, 8 * MIB + 123)) == [(0, 4 * KIB, True),
                                                                     (4 * KIB, 8 * MIB + 123 - 4 * KIB, False)]


def _limits(size: int, pieces: list[tuple[int, int]]) -> list[int]:
    """0, 1, the size, and inside, at and around each piece: ends in holes and in data."""
    out = {0, min(1, size), size, max(size - 1, 0)}
    for offset, length in pieces:
        for n in (offset - 1, offset, offset + 1, offset + length // 2, offset + length - 1, offset + length,
                  offset + length + 4097):
            if 0 <= n <= size:
                out.add(n)
    return sorted(out)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_prefix_equals_hashlib_of_the_prefix(tmp_path: Path, name: str) -> None:
    size, pieces = LAYOUTS[name]
    path = _sparse(tmp_path / "f.img", size, pieces)
    data = path.read_bytes()
    for limit in _limits(size, pieces):
        assert sha256_file(path, limit=limit) == hashlib.sha256(data[:limit]).hexdigest(), limit


def test_limit_ending_in_a_hole_and_in_data(tmp_path: Path) -> None:
    path = _sparse(tmp_path / "f.img", 12 * MIB, [(0, 5000), (6 * MIB, 5 * MIB)])
    data = path.read_bytes()
    in_hole, in_data = 5 * MIB + 7, 7 * MIB + 3
    assert data[in_hole - 1] == 0 and _has_hole(path)
    for limit in (in_hole, in_data, 6 * MIB + CHUNK + 1):
        assert sha256_file(path, limit=limit) == hashlib.sha256(data[:limit]).hexdigest()


@pytest.mark.parametrize("name", ["data-hole-data", "unaligned-bits", "data-across-chunk", "hole-to-eof-unaligned"])
def test_a_slice_equals_hashlib_of_the_slice(tmp_path: Path, name: str) -> None:
    """``offset`` (with or without ``limit``): starting in a hole, in data, at a piece's edges."""
    size, pieces = LAYOUTS[name]
    path = _sparse(tmp_path / "f.img", size, pieces)
    data = path.read_bytes()
    points = _limits(size, pieces)
    for offset in points:
        assert sha256_file(path, offset=offset) == hashlib.sha256(data[offset:]).hexdigest(), offset
        for end in points[::3]:
            if end >= offset:
                assert (sha256_file(path, offset=offset, limit=end - offset)
                        == hashlib.sha256(data[offset:end]).hexdigest()), (offset, end)
    with pytest.raises(ExternalError, match=f"{path}: ended 1 bytes early"):
        sha256_file(path, offset=size // 2, limit=size - size // 2 + 1)


def test_an_offset_past_the_end_is_an_error(tmp_path: Path) -> None:
    path = _sparse(tmp_path / "short.img", 3000, [(0, 3000)])
    with pytest.raises(ExternalError, match="ended"):
        sha256_file(path, offset=3010)


@pytest.mark.parametrize("make", [
    lambda p: _sparse(p, 2 * MIB, [(0, 10)]),
    lambda p: _sparse(p, 3000, [(0, 3000)]),
    lambda p: _sparse(p, 0, []),
])
def test_a_limit_past_the_end_is_an_error(tmp_path: Path, make: Callable[[Path], Path]) -> None:
    path = make(tmp_path / "short.img")
    size = path.stat().st_size
    with pytest.raises(ExternalError, match=f"{path}: ended 1 bytes early") as e:
        sha256_file(path, limit=size + 1)
    assert e.value.hint == "run make image again"
    with pytest.raises(ExternalError, match="ended"):
        sha256_file(path, limit=size + 10 * MIB, label="x")


def test_progress_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _sparse(tmp_path / "f.img", 2 * CHUNK + 5, [(0, 100), (CHUNK + 1, 2 * MIB)])
    assert sha256_file(path, label="x") == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha256_file(path, limit=CHUNK, label="x") == hashlib.sha256(path.read_bytes()[:CHUNK]).hexdigest()
    err = capsys.readouterr().err
    assert "  x: 100 % (8.0 MiB/8.0 MiB)" in err  # capsys's stream is no terminal: one line per 10 %
    assert "  x: 8.0 MiB in " in err and "  x: 4.0 MiB in " in err


def test_a_file_changed_to_data_after_sparse_writes(tmp_path: Path) -> None:
    """Holes filled in later (a hole that becomes data) are read as data: nothing is cached by path."""
    path = _sparse(tmp_path / "f.img", 3 * MIB, [(0, 10)])
    first = sha256_file(path)
    with path.open("r+b") as f:
        f.seek(2 * MIB)
        f.write(b"\x01" * 10)
        f.flush()
        os.fsync(f.fileno())
    assert sha256_file(path) != first
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
