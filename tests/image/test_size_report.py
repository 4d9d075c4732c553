"""`make size`: the report reads the manifest and the UKI; a release build over the payload limit fails,
naming what grew since the recorded sizes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from qx_build import size
from qx_build.paths import Release, read_version
from qx_common.errors import UserError

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")


def _fake_build(tmp_path: Path, root_bytes: int) -> Path:
    rel = Release(read_version(), tmp_path)
    cmd = tmp_path / "cmdline"
    cmd.write_text("ro")
    subprocess.run(["objcopy", "--add-section", f".cmdline={cmd}", "--change-section-vma", ".cmdline=0x30000",
                    str(STUB), str(rel.uki)], check=True)
    arts = {
        "root": {"file": rel.root_payload.name, "size": root_bytes, "sha256": "0" * 64,
                 "uncompressed_size": 3 * root_bytes, "uncompressed_sha256": "0" * 64, "slot_size_min": 1},
        "uki": {"file": rel.uki.name, "size": rel.uki.stat().st_size, "sha256": "0" * 64},
    }
    rel.manifest.write_text(json.dumps({"version": rel.version, "artifacts": arts}))
    return tmp_path


def test_report_within_goal(tmp_path: Path) -> None:
    out = size.report(_fake_build(tmp_path, 100 * 1000**2))
    assert "within the 150 MB limit" in out and ".cmdline" in out
    assert "uncompressed 286.1 MiB" in out


def test_report_over_goal(tmp_path: Path) -> None:
    assert "OVER the 150 MB limit" in size.report(_fake_build(tmp_path, 200 * 1000**2))


def test_dir_sizes_groups_by_depth(tmp_path: Path) -> None:
    (tmp_path / "usr/lib/a").mkdir(parents=True)
    (tmp_path / "usr/lib/a/f").write_bytes(b"x" * 1000)
    (tmp_path / "usr/lib/b").mkdir(parents=True)
    (tmp_path / "usr/lib/b/g").write_bytes(b"x" * 500)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/h").write_bytes(b"x" * 10)
    sizes = size.dir_sizes(tmp_path, depth=2)
    assert sizes["/usr/lib"] == 1500 and sizes["/etc"] == 10


def test_report_without_a_build_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no build of .* missing") as e:
        size.report(tmp_path)
    assert e.value.hint == "run 'make image' first"


def _sizes(root: int, **dirs: int) -> size.Sizes:
    return size.Sizes(version="1.0.0", profile="release", level=19, artifacts={"root": root, "uki": 40 * 1000**2},
                      uki_sections={".linux": 12 * 2**20, ".initrd": 28 * 2**20},
                      root_dirs={f"/usr/{k}": v for k, v in dirs.items()})


def test_a_release_over_the_limit_fails_naming_what_grew_most_first() -> None:
    before = _sizes(100 * 1000**2, lib=50 * 2**20, bin=20 * 2**20, share=5 * 2**20)
    now = _sizes(125 * 1000**2, lib=70 * 2**20, bin=20 * 2**20 + 1000, share=9 * 2**20, games=3 * 2**20)
    with pytest.raises(size.OverLimit) as e:
        size.check(now, before)
    msg = e.value.message
    assert "165.0 MB, 15.0 MB over the 150 MB limit" in msg and "since the recorded 1.0.0 (140.0 MB)" in msg
    assert msg.index("artifact root: +23.8 MiB") < msg.index("root directory /usr/lib: +20.0 MiB")
    grew = size.compare(now, before)
    assert grew[0].startswith("artifact root: +23.8 MiB") and grew[1].startswith("root directory /usr/lib: +20.0")
    assert "root directory /usr/games: +3.0 MiB to 3.0 MiB (new)" in grew
    assert not any("/usr/bin" in g for g in grew), "a growth under 64 KiB is noise"


def test_within_the_limit_or_a_fast_build_passes() -> None:
    size.check(_sizes(100 * 1000**2), None)
    fast = _sizes(300 * 1000**2)
    fast.profile, fast.level = "fast", 3
    size.check(fast, None)    # reported, not judged: zstd -3 is larger by design


def test_over_the_limit_without_a_record_says_so() -> None:
    with pytest.raises(size.OverLimit, match="no size record to compare with"):
        size.check(_sizes(120 * 1000**2), None)


def test_the_record_round_trips_and_refuses_a_fast_build(tmp_path: Path) -> None:
    rec = tmp_path / "size-record.json"
    s = _sizes(100 * 1000**2, lib=1)
    size.record(s, rec)
    assert size.load_record(rec) == s
    fast = _sizes(1)
    fast.profile = "fast"
    with pytest.raises(UserError, match="only a release build"):
        size.record(fast, tmp_path / "other.json")
    rec.write_text('{"version": 1')
    with pytest.raises(UserError, match="not a size record"):
        size.load_record(rec)
    with pytest.raises(UserError, match="no root filesystem to measure"):
        size.record(_sizes(100 * 1000**2), tmp_path / "no-root.json")


@pytest.mark.parametrize(("edit", "complaint"), [
    (lambda d: d["artifacts"].pop("uki"), "artifacts.uki: missing"),
    (lambda d: d.update(uki_sections=None), "uki_sections: missing or not a dict"),
    (lambda d: d["root_dirs"].update({"/usr": "big"}), "root_dirs: every value must be a byte count"),
    (lambda d: d.update(level=True), "level: missing or not a int"),
    (lambda d: d.update(extra=1), "unknown field 'extra'"),
    (lambda d: d.pop("version"), "version: missing"),
])
def test_a_malformed_record_is_an_error_naming_the_field(tmp_path: Path, edit, complaint: str) -> None:
    rec = tmp_path / "size-record.json"
    size.record(_sizes(100 * 1000**2, lib=1), rec)
    data = json.loads(rec.read_text())
    edit(data)
    rec.write_text(json.dumps(data))
    with pytest.raises(UserError, match=re.escape(complaint)) as e:
        size.load_record(rec)
    assert e.value.hint == "write it again from a release build: make size RECORD=1"
