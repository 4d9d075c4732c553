"""Which root slot a kernel command line boots — the one parser every package uses.

A Quantix boot entry passes ``root=PARTLABEL=root-a`` or ``root=PARTLABEL=root-b``
(:func:`root_arg`). Like the kernel, the *last* ``root=`` word counts; the slot is known only when that
word is exactly one of the two forms (``root=PARTLABEL=root-a.old``, ``root=/dev/vda2`` or no ``root=``
at all — the live ISO — give ``None``).
"""

from __future__ import annotations

SLOTS = ("a", "b")
_PREFIX = "root=PARTLABEL=root-"


def root_arg(slot: str) -> str:
    if slot not in SLOTS:
        raise ValueError(f"slot must be one of {SLOTS}, not {slot!r}")
    return f"{_PREFIX}{slot}"


def slot_from_cmdline(cmdline: str) -> str | None:
    roots = [w for w in cmdline.split() if w.startswith("root=")]
    if not roots:
        return None
    last = roots[-1]
    if last.startswith(_PREFIX) and last[len(_PREFIX):] in SLOTS:
        return last[len(_PREFIX):]
    return None
