"""Read a GPT partition table from an image file with ``sfdisk --json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qx_common import run as r
from qx_common.errors import UserError

SECTOR = 512
ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ROOT_X86_64_TYPE = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
ROOT_X86_64_VERITY_TYPE = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"
LINUX_GENERIC_TYPE = "0fc63daf-8483-4772-8e79-3d69d8477de4"


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    type: str
    uuid: str
    start: int  # bytes
    size: int  # bytes
    attrs: str


def read_table(image: Path) -> list[Partition]:
    out = r.run(["sfdisk", "--json", image]).stdout
    try:
        table = json.loads(out)["partitiontable"]
    except (ValueError, KeyError) as e:
        raise UserError(f"{image}: no readable partition table") from e
    if table.get("label") != "gpt":
        raise UserError(f"{image}: partition table is {table.get('label')!r}, expected gpt")
    sector = int(table.get("sectorsize", SECTOR))
    parts = []
    for i, p in enumerate(table.get("partitions", []), start=1):
        parts.append(Partition(
            number=i,
            name=p.get("name", ""),
            type=p["type"].lower(),
            uuid=p.get("uuid", "").lower(),
            start=int(p["start"]) * sector,
            size=int(p["size"]) * sector,
            attrs=p.get("attrs", ""),
        ))
    return parts


def find(parts: list[Partition], name: str) -> Partition:
    for p in parts:
        if p.name == name:
            return p
    raise UserError(f"no partition named {name!r} (have: {', '.join(p.name for p in parts)})")
