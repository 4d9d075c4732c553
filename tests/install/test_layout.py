"""Converting a disk installed before dm-verity (qx_install.layout), on disk image files: no loop device.

The old disk is made as an install of such a release made it (systemd-repart from its definitions); its ESP
and data partition are filled with random bytes, which must come through the conversion unchanged, as
must their GPT entries. The new table must be the one a wipe makes (systemd-repart from the new
definitions on an empty disk of the same size).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from qx_common.errors import UserError
from qx_install import layout
from qx_install import payload as payloadmod
from tests.install.conftest import make_payload

SIZE = 300 * 1024**2
LAYOUT = ["esp", "root-a", "root-a-verity", "root-b", "root-b-verity", "quantix-data"]


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> tuple[payloadmod.Payload, payloadmod.Payload]:
    """(a release from before verity, a verity release) with the small test layouts."""
    d = tmp_path_factory.mktemp("payloads")
    old = payloadmod.open_payload(make_payload(d / "old", old_layout=True))
    new = payloadmod.open_payload(make_payload(d / "new", version="0.9.2", verity=True))
    return old, new


def _repart(payload: payloadmod.Payload, img: Path, work: Path) -> None:
    """An empty disk image of SIZE bytes partitioned from ``payload``'s definitions (no filesystems)."""
    defs = work / f"defs-{img.name}"
    layout.write_definitions(payload, defs, bare=True)
    with img.open("wb") as f:
        f.truncate(SIZE)
    subprocess.run(["systemd-repart", "--dry-run=no", "--empty=force", "--no-pager", "--offline=yes", "--json=off",
                    f"--definitions={defs}", str(img)], check=True, capture_output=True)


def _entries(img: Path) -> dict[str, dict]:
    table = json.loads(subprocess.run(["sfdisk", "--json", str(img)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]
    return {p["name"]: {k: v for k, v in p.items() if k != "node"} for p in table["partitions"]}


def _header(img: Path) -> list[str]:
    dump = subprocess.run(["sfdisk", "--dump", str(img)], check=True, capture_output=True, text=True).stdout
    return [line for line in dump.splitlines() if line.startswith(("label-id:", "first-lba:", "last-lba:"))]


def _region(img: Path, entry: dict) -> str:
    with img.open("rb") as f:
        f.seek(entry["start"] * 512)
        return hashlib.sha256(f.read(entry["size"] * 512)).hexdigest()


def _fill(img: Path, entry: dict) -> None:
    """Random bytes over the whole partition: any write of the conversion into it would show."""
    with img.open("r+b") as f:
        f.seek(entry["start"] * 512)
        f.write(hashlib.shake_256(str(entry).encode()).digest(entry["size"] * 512))


def test_an_old_disk_gets_the_new_slots_and_keeps_the_esp_and_data_byte_for_byte(
        payloads: tuple[payloadmod.Payload, payloadmod.Payload], tmp_path: Path) -> None:
    old, new = payloads
    disk = tmp_path / "disk.img"
    _repart(old, disk, tmp_path)
    before = _entries(disk)
    assert list(before) == ["esp", "root-a", "root-b", "quantix-data"]
    for name in ("esp", "quantix-data"):
        _fill(disk, before[name])
    sums = {name: _region(disk, before[name]) for name in ("esp", "quantix-data")}
    header = _header(disk)
    conv = layout.conversion(str(disk), new, disk_size=SIZE)
    assert conv is not None
    assert conv.size_of("root-a") == 56 * 1024**2 and conv.size_of("root-a-verity") == 8 * 1024**2
    layout.write(conv)
    after = _entries(disk)
    assert list(after) == LAYOUT
    for name in ("esp", "quantix-data"):
        assert after[name] == before[name], name
        assert _region(disk, after[name]) == sums[name], f"{name}: its bytes changed"
    fresh = tmp_path / "fresh.img"
    _repart(new, fresh, tmp_path)

    def geometry(entries: dict[str, dict]) -> list[tuple]:
        return [(n, e["start"], e["size"], e["type"], e.get("attrs")) for n, e in entries.items()]

    assert geometry(after) == geometry(_entries(fresh))   # what a wipe makes
    assert len({e["uuid"] for e in after.values()}) == len(after)
    assert layout.conversion(str(disk), new, disk_size=SIZE) is None   # done: nothing more to convert
    assert _header(disk) == header   # the disk's own GUID and usable range


def test_a_disk_whose_slots_cannot_be_converted_is_refused_and_left_as_it_is(
        payloads: tuple[payloadmod.Payload, payloadmod.Payload], tmp_path: Path) -> None:
    old, new = payloads
    disk = tmp_path / "disk.img"
    _repart(old, disk, tmp_path)
    table = _entries(disk)
    # A partition of the operator's between root-b and the data partition: never guessed about.
    b = table["root-b"]
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "--delete", str(disk), "3"], check=True)
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "--append", str(disk)], check=True, text=True,
                   input=f"start={b['start']}, size={b['size'] // 2}, name=\"mine\"\n")
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", "--append", str(disk)], check=True, text=True,
                   input=f"start={b['start'] + b['size'] // 2}, size={b['size'] // 2}, name=\"root-b\"\n")
    stray = _entries(disk)
    with pytest.raises(UserError, match="mine lie between root-a and the data partition") as e:
        layout.conversion(str(disk), new, disk_size=SIZE)
    assert "wipe" in (e.value.hint or "")
    assert _entries(disk) == stray
    # Slots that do not fit before the data partition.
    big = tmp_path / "big"
    make_payload(big, version="0.9.3", verity=True)
    for conf in ("10-root-a.conf", "20-root-b.conf"):
        f = big / "repart.d" / conf
        f.write_text(f.read_text().replace("=56M", "=60M"))
    subprocess.run(f"cd {big} && sha256sum $(find . -type f ! -name SHA256SUMS -printf '%P\\n' | sort) > SHA256SUMS",
                   shell=True, check=True)
    fresh = tmp_path / "fresh.img"
    _repart(old, fresh, tmp_path)
    with pytest.raises(UserError, match="need .* bytes before the data partition"):
        layout.conversion(str(fresh), payloadmod.open_payload(big), disk_size=SIZE)
    assert list(_entries(fresh)) == ["esp", "root-a", "root-b", "quantix-data"]


@pytest.mark.root
def test_a_4k_sector_disk_is_converted_like_a_512_byte_one(
        payloads: tuple[payloadmod.Payload, payloadmod.Payload], tmp_path: Path) -> None:
    """A 4Kn disk (sfdisk: sector size 4096) converts as a 512-byte one does: the scratch layout is read
    back in the disk's own sectors (sfdisk reads an image file's GPT in 512-byte sectors only, so a 4 KiB
    scratch image read as one has no slots at all), and the ESP and data partition keep their entries."""
    old, new = payloads
    img = tmp_path / "disk4k.img"
    defs = tmp_path / "defs-4k"
    layout.write_definitions(old, defs, bare=True)
    with img.open("wb") as f:
        f.truncate(SIZE)
    subprocess.run(["systemd-repart", "--dry-run=no", "--empty=force", "--no-pager", "--offline=yes", "--json=off",
                    "--sector-size=4096", f"--definitions={defs}", str(img)], check=True, capture_output=True)
    dev = subprocess.run(["losetup", "-f", "--show", "-b", "4096", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        disk = Path(dev)
        before = _entries(disk)
        assert list(before) == ["esp", "root-a", "root-b", "quantix-data"]
        conv = layout.conversion(dev, new, disk_size=SIZE)
        assert conv is not None and int(conv.table["sectorsize"]) == 4096
        assert conv.size_of("root-a") == 56 * 1024**2 and conv.size_of("root-a-verity") == 8 * 1024**2
        layout.write(conv)
        after = _entries(disk)
        assert list(after) == LAYOUT
        for name in ("esp", "quantix-data"):
            assert after[name] == before[name], name
        # The slots fill the old slots' place, in 4 KiB sectors: root-a where it was, root-b-verity ending
        # where root-b did.
        assert after["root-a"]["start"] == before["root-a"]["start"]
        assert (after["root-b-verity"]["start"] + after["root-b-verity"]["size"]
                == before["root-b"]["start"] + before["root-b"]["size"])
        assert layout.conversion(dev, new, disk_size=SIZE) is None
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_a_slot_outside_the_slots_region_is_refused(
        payloads: tuple[payloadmod.Payload, payloadmod.Payload], tmp_path: Path) -> None:
    """root-b after the data partition (root-a large enough for all the new slots): the region before the
    data partition holds only root-a, and root-b would have been kept beside the new root-b — two
    partitions named root-b, one of which qx-update would write by its label. Refused, the disk untouched."""
    _, new = payloads
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(SIZE)
    subprocess.run(["sfdisk", "-q", str(disk)], check=True, text=True, input=(
        "label: gpt\nsize=10MiB, name=esp\nsize=150MiB, name=root-a\nsize=64MiB, name=quantix-data\n"
        "size=40MiB, name=root-b\n"))
    before = _entries(disk)
    with pytest.raises(UserError, match="root-b lies outside") as e:
        layout.conversion(str(disk), new, disk_size=SIZE)
    assert "wipe" in (e.value.hint or "")
    assert _entries(disk) == before
