"""The validated body of ``PATCH /v1/vms/{name}``: what to change on an existing VM.

``parse_vm_edit(body)`` accepts any JSON value and returns a :class:`VmEdit` (every field either
``None`` — unchanged — or a valid value) or raises :class:`~qx_node.errors.InvalidField` naming
the field. Unknown keys and an empty edit are refused. The same ranges and name rules as
:mod:`qx_node.vmspec` apply. ``VmService.edit`` applies it (see there for live vs. next start).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qx_node.errors import InvalidField
from qx_node.vmspec import MAX_MEMORY_MIB, MAX_VCPUS, NAME_RE, _bool, _int, _obj, _str, valid_vm_name

TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,31}$")
MAX_TAGS = 32
MAX_DESCRIPTION = 4096
_KEYS = {"name", "vcpus", "memory_mib", "description", "tags", "autostart"}


@dataclass(frozen=True)
class VmEdit:
    name: str | None = None  # rename (the VM must be shut off)
    vcpus: int | None = None
    memory_mib: int | None = None
    description: str | None = None  # "" removes it
    tags: tuple[str, ...] | None = None  # the whole set; () removes all
    autostart: bool | None = None  # start with the host


def valid_description(v: Any, field: str = "description") -> str:
    if not isinstance(v, str):
        raise InvalidField(f"{field}: must be a string", field=field)
    if len(v) > MAX_DESCRIPTION or any((ord(c) < 32 and c not in "\n\t") or ord(c) == 127 for c in v):
        raise InvalidField(f"{field}: must be at most {MAX_DESCRIPTION} printable characters (newlines allowed)",
                           field=field)
    return v


def parse_vm_edit(body: Any) -> VmEdit:
    d = _obj(body, "", _KEYS)
    if not d:
        raise InvalidField("body: names nothing to change", field="body", hint="fields: " + ", ".join(sorted(_KEYS)))
    name = None
    if "name" in d:
        name = _str(d, "name", "", required=True, hint='for example "web-2"')
        assert name is not None
        valid_vm_name(name)
    vcpus = _int(d, "vcpus", "", 1, MAX_VCPUS) if "vcpus" in d else None
    memory = _int(d, "memory_mib", "", 16, MAX_MEMORY_MIB) if "memory_mib" in d else None
    description = valid_description(d["description"]) if "description" in d else None
    tags = None
    if "tags" in d:
        raw = d["tags"]
        if not isinstance(raw, list):
            raise InvalidField("tags: must be a list of strings", field="tags")
        if len(raw) > MAX_TAGS:
            raise InvalidField(f"tags: at most {MAX_TAGS}", field="tags")
        for i, t in enumerate(raw):
            if not isinstance(t, str) or not TAG_RE.fullmatch(t):
                raise InvalidField(f"tags[{i}]: is not a valid tag", field=f"tags[{i}]",
                                   hint="1-32 characters: letters, digits, '_', '.', ':', '-'")
        tags = tuple(sorted(set(raw)))
    autostart = _bool(d, "autostart", "", False) if "autostart" in d else None
    return VmEdit(name=name, vcpus=vcpus, memory_mib=memory, description=description, tags=tags, autostart=autostart)


VM_EDIT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "name": {"type": "string", "pattern": NAME_RE.pattern, "description": "rename (the VM must be shut off)"},
        "vcpus": {"type": "integer", "minimum": 1, "maximum": MAX_VCPUS},
        "memory_mib": {"type": "integer", "minimum": 16, "maximum": MAX_MEMORY_MIB},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
        "tags": {"type": "array", "maxItems": MAX_TAGS, "items": {"type": "string", "pattern": TAG_RE.pattern}},
        "autostart": {"type": "boolean", "description": "start the VM when the host boots"},
    },
}
