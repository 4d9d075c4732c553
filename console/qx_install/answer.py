"""The answer file of an unattended install: TOML, the host configuration plus ``[install]``.

Layout (one file, every key optional unless said otherwise)::

    hostname = "host1"                  # top level: exactly the schema of qx_console.hostconfig
    [network] ... [ssh] ...             # (parsed by hostconfig.parse_host_config, not here)

    [install]                           # required
    mode = "wipe"                       # required: wipe | keep-data | upgrade
    keep_config = true                  # keep-data only: keep the host's configuration (false: reset it)
    root_password_hash = '$6$...'       # `openssl passwd -6` / yescrypt; required when the config is written
    keyboard = "us"                     # qx_console.keyboard.LAYOUTS
    after = "reboot"                    # reboot | poweroff | none

    [install.disk]                      # required, at least one key: the installer never picks "the first disk"
    by_id = "nvme-Samsung*"             # glob over /dev/disk/by-id names
    model = "..."  serial = "..."       # exact or glob
    min_size = "100GB"  max_size = "2TiB"   # int bytes or a string with a decimal or binary unit
    transport = "nvme"                  # nvme | sata | sas | usb | virtio | scsi | loop

Invariants:

* :func:`parse` either returns a complete, validated :class:`Answer` or raises
  :class:`~qx_console.hostconfig.ValidationError` (a :class:`~qx_common.errors.UserError`) listing every
  problem it found, each naming the key (``install.disk.min_size``, ``network.ipv4.gateway``), what is
  wrong and the fix. It never raises anything else, whatever the bytes (fuzzed in the tests).
* Nothing about the host configuration is decided here: the top-level keys go to
  :func:`hostconfig.parse_host_config` unchanged, so the console, the node API and the answer file share
  one set of rules.
* A setting the install would not use is refused, not ignored: host settings and the root password hash
  with ``mode = "upgrade"`` or ``keep-data`` + ``keep_config = true`` (the host keeps its own).
* The root password hash is never echoed back in an error (it may be a password pasted by mistake).

Call order: :func:`load` (or :func:`parse` for bytes from :mod:`qx_install.sources`) → the engine.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from qx_common.errors import UserError
from qx_console import hostconfig, keyboard
from qx_console.hostconfig import FieldError, HostConfig, Provenance, ValidationError

MAX_BYTES = 1 << 20          # an answer file is a few hundred bytes; 1 MiB bounds what a fetch or a volume hands us
MAX_DEPTH = 8                # the schema nests 3 levels (network.ipv4.address); deeper input is garbage
MAX_KEY_DOTS = 16            # '.' outside strings on one line: tomllib's cost grows with the square of a key's parts
MAX_TEXT = 256               # longest filter string (model/serial/by-id names are far shorter)
INT64 = (-(1 << 63), (1 << 63) - 1)   # TOML integers are 64-bit; tomllib accepts any size

MODES = ("wipe", "keep-data", "upgrade")
AFTER = ("reboot", "poweroff", "none")
TRANSPORTS = ("nvme", "sata", "sas", "usb", "virtio", "scsi", "loop")
BY_ID_DIR = "/dev/disk/by-id/"

HASH_HINT = ("run `openssl passwd -6`, type the password twice, and paste the line it prints "
             "(it starts with $6$) in single quotes: root_password_hash = '$6$...'")

_INSTALL_KEYS = ("disk", "mode", "keep_config", "root_password_hash", "keyboard", "after")
_DISK_KEYS = ("by_id", "model", "serial", "min_size", "max_size", "transport")

_CRYPT = r"[./0-9A-Za-z]"
# The crypt(3) hash formats libxcrypt verifies and Quantix accepts: SHA-512, SHA-256 (both with an
# optional rounds=), yescrypt (Debian's default). Lengths are the encoded hash lengths of each method.
_HASH_FORMATS = {
    "$6$": re.compile(rf"^\$6\$(rounds=[0-9]{{1,9}}\$)?{_CRYPT}{{0,16}}\${_CRYPT}{{86}}$"),
    "$5$": re.compile(rf"^\$5\$(rounds=[0-9]{{1,9}}\$)?{_CRYPT}{{0,16}}\${_CRYPT}{{43}}$"),
    "$y$": re.compile(rf"^\$y\${_CRYPT}{{1,32}}\${_CRYPT}{{0,86}}\${_CRYPT}{{43}}$"),
}

_UNITS = {
    "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "pb": 10**15,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
}
_SIZE = re.compile(r"^\s*([0-9]{1,20}(?:\.[0-9]{1,9})?)\s*([A-Za-z]*)\s*$")
_TOML_POS = re.compile(r"^(?P<what>.*?) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")
_TOML_END = re.compile(r"^(?P<what>.*?) \(at end of document\)$")


@dataclass(frozen=True)
class DiskFilter:
    """Which disk to install on. Every non-empty field must match; at least one is set (parse checks).

    ``by_id`` is a glob over the names in ``/dev/disk/by-id`` (without the directory); ``model`` and
    ``serial`` match exactly or as globs; sizes are bytes, inclusive; ``transport`` is one of
    :data:`TRANSPORTS`. Matching lives in :func:`qx_install.disks.select`.
    """

    by_id: str = ""
    model: str = ""
    serial: str = ""
    min_size: int | None = None
    max_size: int | None = None
    transport: str = ""

    @property
    def empty(self) -> bool:
        return not (self.by_id or self.model or self.serial or self.transport
                    or self.min_size is not None or self.max_size is not None)

    def describe(self) -> str:
        """One line for messages: ``by_id=nvme-* min_size=100.0 GB``."""
        parts = [f"{k}={v}" for k, v in (("by_id", self.by_id), ("model", self.model), ("serial", self.serial),
                                         ("transport", self.transport)) if v]
        parts += [f"{k}={format_size(v)}" for k, v in (("min_size", self.min_size), ("max_size", self.max_size))
                  if v is not None]
        return " ".join(parts) or "(no filter)"


@dataclass(frozen=True)
class InstallSettings:
    disk: DiskFilter
    mode: str                     # one of MODES
    keep_config: bool = True      # keep-data only
    root_password_hash: str = ""  # "" exactly when the mode keeps the host's configuration
    keyboard: str = keyboard.DEFAULT_LAYOUT
    after: str = "reboot"         # one of AFTER

    @property
    def writes_config(self) -> bool:
        """True when the install writes this file's host configuration and root password hash
        (``wipe``, or ``keep-data`` with ``keep_config = false``); False when the host keeps its own."""
        return self.mode == "wipe" or (self.mode == "keep-data" and not self.keep_config)


@dataclass(frozen=True)
class Answer:
    host: HostConfig
    install: InstallSettings
    # Dotted paths of the host settings the file set, at the provenance store's granularity
    # (``network.ipv4`` is one setting, as in hostconfig.NETWORK_FIELDS), sorted.
    host_fields: tuple[str, ...] = ()

    def provenance(self, source: str = "answer-file") -> Provenance:
        """The provenance entries an install records for this file's settings (the rest stay defaults)."""
        return {f: source for f in self.host_fields}


# ---------------------------------------------------------------------------------------------
# Sizes (shared with qx_install.disks for display).


def format_size(n: int) -> str:
    """Bytes as decimal units with one decimal, as disk vendors label them: ``4.0 GB``, ``512 B``."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB", "PB", "EB"):
        value /= 1000
        if value < 999.95 or unit == "EB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def _size(value: object, fld: str) -> tuple[int | None, FieldError | None]:
    hint = 'write a number of bytes or a size with its unit, e.g. "500GB", "1.5TiB", "512MiB"'
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None, FieldError(fld, f"has the wrong type ({type(value).__name__})", hint)
    if isinstance(value, int):
        if value < 1:
            return None, FieldError(fld, "must be at least 1 byte", hint)
        return value, None
    m = _SIZE.match(value)
    if not m:
        return None, FieldError(fld, f"{_show(value)} is not a size", hint)
    number, unit = m.group(1), m.group(2).lower()
    if unit not in _UNITS:
        if not unit:
            return None, FieldError(fld, f"{_show(value)} has no unit",
                                    f'write "{number}GB" (powers of 1000), "{number}GiB" (powers of 1024), or a '
                                    "number without quotes for bytes")
        if unit in ("k", "m", "g", "t", "p"):
            up = unit.upper()
            return None, FieldError(fld, f"{_show(value)} has an ambiguous unit '{m.group(2)}'",
                                    f"write {up}B (powers of 1000) or {up}iB (powers of 1024)")
        return None, FieldError(fld, f"{_show(value)} has an unknown unit '{_clip(m.group(2))}'",
                                "use B, kB, MB, GB, TB, PB (powers of 1000) or KiB, MiB, GiB, TiB, PiB (1024)")
    try:
        size = int(Decimal(number) * _UNITS[unit])  # whole bytes, rounded down
    except InvalidOperation:  # pragma: no cover - the regex admits only plain decimals
        return None, FieldError(fld, f"{_show(value)} is not a size", hint)
    if size < 1:
        return None, FieldError(fld, "must be at least 1 byte", hint)
    return size, None


def parse_size(value: int | str, fld: str = "size") -> int:
    """``"1.5TiB"`` / ``"20GB"`` / ``512`` -> bytes; :class:`ValidationError` naming ``fld`` otherwise."""
    size, err = _size(value, fld)
    if err:
        raise ValidationError([err])
    assert size is not None
    return size


# ---------------------------------------------------------------------------------------------
# The root password hash.


def check_password_hash(value: object, fld: str = "install.root_password_hash") -> FieldError | None:
    """A crypt(3) hash of a format in :data:`_HASH_FORMATS`. The value itself never appears in the error."""
    if not isinstance(value, str):
        return FieldError(fld, f"has the wrong type ({type(value).__name__})", HASH_HINT)
    if not value:
        return FieldError(fld, "is empty", HASH_HINT)
    for prefix, pattern in _HASH_FORMATS.items():
        if value.startswith(prefix):
            if pattern.match(value):
                return None
            return FieldError(fld, f"starts like a {prefix} hash but is not a complete one "
                                   "(a part is missing, too long or has characters a hash cannot have)",
                              "paste the whole line `openssl passwd -6` printed, in single quotes")
    if value.startswith("$1$"):
        return FieldError(fld, "is an MD5 crypt hash, which is too weak for a root password", HASH_HINT)
    if value.startswith("$"):
        return FieldError(fld, "uses a hash method Quantix does not accept", "use SHA-512 ($6$), SHA-256 ($5$) "
                          "or yescrypt ($y$): " + HASH_HINT)
    return FieldError(fld, "is not a password hash (never put the password itself in the file)", HASH_HINT)


# ---------------------------------------------------------------------------------------------
# Parsing.


def load(path: Path) -> Answer:
    """Read and :func:`parse` the answer file at ``path`` (read at most :data:`MAX_BYTES` + 1 bytes)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError as e:
        raise UserError(f"answer file {path} does not exist", hint="give the path of a TOML answer file") from e
    except IsADirectoryError as e:
        raise UserError(f"answer file {path} is a directory", hint="give the path of a TOML answer file") from e
    except OSError as e:
        raise UserError(f"cannot read answer file {path}: {e.strerror or e}",
                        hint="check the path and its permissions") from e
    return parse(data, source=str(path))


def parse(data: str | bytes, *, source: str = "answer file") -> Answer:
    """Parse and validate an answer file; :class:`ValidationError` lists every problem found.

    File-level problems (size, encoding, TOML syntax, nesting) stop at once with a single error whose
    field is ``source``; otherwise the host configuration and ``[install]`` are both checked and all
    their errors raised together.
    """
    doc = _load_toml(_decode(data, source), source)
    _check_shape(doc, source)
    install_raw = doc.pop("install", None)
    errs: list[FieldError] = []
    host: HostConfig | None = None
    try:
        host = hostconfig.parse_host_config(doc)
    except ValidationError as e:
        errs += e.errors
    fields = _host_fields(doc)
    inst = _parse_install(install_raw)
    if inst.kept:
        # Settings the install would ignore are refused; a field hostconfig already flagged keeps
        # that error alone (one complaint per key).
        flagged = [e.field for e in errs]
        why, fix = inst.kept
        errs += [FieldError(f, f"is not used with {why}", f"the host keeps its own configuration; {fix}")
                 for f in fields
                 if not any(g == f or g.startswith(f + ".") or f.startswith(g + ".") for g in flagged)]
    errs += inst.errors
    if errs:
        raise ValidationError(errs)
    assert host is not None and inst.settings is not None
    return Answer(host=host, install=inst.settings, host_fields=fields)


def _decode(data: str | bytes, source: str) -> str:
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates in a str: not text any file could hold
            raise ValidationError([FieldError(source, f"contains a character that is not valid text at "
                                                      f"position {e.start}", "save the file as UTF-8")]) from e
    if len(data) > MAX_BYTES:
        raise ValidationError([FieldError(source, f"is larger than {MAX_BYTES // 1024} KiB",
                                          "an answer file is a short TOML file: check that this is the right file")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        where = f"line {line}, byte {e.start + 1} of the file"
        raise ValidationError([FieldError(source, f"is not valid UTF-8 text ({where})",
                                          "save the file as UTF-8 (plain ASCII is fine)")]) from e
    return text.removeprefix("\ufeff")  # a byte-order mark from a Windows editor is harmless


def _key_dots(text: str) -> int:
    """The most '.' characters outside strings and comments on any one line (linear scan).

    tomllib handles a dotted key of n parts in O(n²) time and memory: one line of "x.x.x..." in a
    200 KiB file took 24 GB. A valid answer file has at most 2 dots in a key (network.ipv4.address)
    and no floats, so a line with more than :data:`MAX_KEY_DOTS` is refused before tomllib sees it.
    """
    worst = dots = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            worst, dots = max(worst, dots), 0
        elif c == ".":
            dots += 1
        elif c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif c in "\"'":
            triple = text.startswith(c * 3, i)
            close = c * 3 if triple else c
            j = i + len(close)
            while j < n:  # find the closing quote; basic strings have backslash escapes
                if c == '"' and text[j] == "\\":
                    j += 2
                    continue
                if text.startswith(close, j) or (not triple and text[j] == "\n"):
                    break
                j += 1
            i = j + (len(close) if text.startswith(close, j) else 0)
            continue
        i += 1
    return max(worst, dots)


def _load_toml(text: str, source: str) -> dict[str, Any]:
    if _key_dots(text) > MAX_KEY_DOTS:
        raise ValidationError([FieldError(source, f"has a line with more than {MAX_KEY_DOTS} '.' outside quotes",
                                          "an answer file's keys nest at most 3 levels (network.ipv4.address)")])
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        if (m := _TOML_POS.match(msg)):
            where, what = f"line {m.group('line')}, column {m.group('col')}", m.group("what")
        elif (m := _TOML_END.match(msg)):
            where, what = "at the end of the file", m.group("what")
        else:  # pragma: no cover - tomllib always says where
            where, what = "", msg
        what = what[:1].lower() + what[1:]
        raise ValidationError([FieldError(source, f"is not valid TOML: {where}: {what}".replace(": : ", ": "),
                                          'check the syntax there: strings need quotes (mode = "wipe"), '
                                          "tables are [install] and [install.disk]")]) from e
    except RecursionError as e:  # tomllib recurses per nesting level of arrays and inline tables
        raise ValidationError([FieldError(source, "is nested too deeply to be an answer file",
                                          "an answer file nests at most 3 levels (network.ipv4.address)")]) from e
    except ValueError as e:  # Python's limit on decimal digits of an integer (4300)
        raise ValidationError([FieldError(source, f"is not valid TOML: {e}",
                                          "numbers in an answer file are short")]) from e


def _check_shape(doc: dict[str, Any], source: str) -> None:
    """Refuse structures no valid file has before any rule looks at them: nesting deeper than
    :data:`MAX_DEPTH` (dotted keys nest without limit in tomllib) and integers outside TOML's 64-bit
    range (tomllib accepts them; a huge int cannot even be formatted into an error message)."""
    errs: list[FieldError] = []
    stack: list[tuple[str, Any, int]] = [("", doc, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValidationError([FieldError(source, "is nested too deeply to be an answer file",
                                              "an answer file nests at most 3 levels (network.ipv4.address)")])
        if isinstance(value, dict):
            stack += [(f"{path}.{k}" if path else k, v, depth + 1) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{path}[{i}]", v, depth + 1) for i, v in enumerate(value)]
        elif isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
            errs.append(FieldError(_clip(path, 80), "is a number too large for TOML (64-bit integers)",
                                   f"TOML integers are at most {INT64[1]}; use a value this setting can have"))
    if errs:
        raise ValidationError(sorted(errs, key=lambda e: e.field))


def _host_fields(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """Leaf paths of the host settings present in ``doc``, grouped as the provenance store groups them."""
    out: set[str] = set()
    stack: list[tuple[str, Any]] = [(k, v) for k, v in doc.items()]
    while stack:
        path, value = stack.pop()
        group = next((g for g in hostconfig.NETWORK_FIELDS if path == g or path.startswith(g + ".")), None)
        if group:
            out.add(group)
        elif isinstance(value, dict):
            stack += [(f"{path}.{k}", v) for k, v in value.items()]
        else:
            out.add(path)
    return tuple(sorted(out))


def _kept_why(mode: str | None) -> tuple[str, str]:
    if mode == "upgrade":
        return 'mode = "upgrade"', "remove it from the file"
    return ('mode = "keep-data" and keep_config = true',
            "remove it, or set keep_config = false to reset the host's configuration to this file's")


@dataclass
class _Install:
    """What :func:`_parse_install` learned, also when it found errors (the host check needs ``kept``)."""

    settings: InstallSettings | None
    errors: list[FieldError]
    kept: tuple[str, str] | None = None   # the mode keeps the host's configuration: (why, fix) for messages


def _parse_install(raw: object) -> _Install:
    if raw is None:
        return _Install(None, [FieldError("install", "is missing",
                                          'add an [install] table with mode = "wipe" (or "keep-data", "upgrade") '
                                          "and an [install.disk] table that names the disk")])
    if not isinstance(raw, dict):
        return _Install(None, [_wrong_type("install", raw, "a table: [install]")])
    errs = _unknown_keys(raw, _INSTALL_KEYS, "install")

    mode: str | None = None
    if "mode" not in raw:
        errs.append(FieldError("install.mode", "is missing",
                               'add mode = "wipe" (new install), "keep-data" (reinstall keeping the data '
                               'partition) or "upgrade" (new version into the inactive slot)'))
    elif not isinstance(raw["mode"], str):
        errs.append(_wrong_type("install.mode", raw["mode"], 'a string: "wipe", "keep-data" or "upgrade"'))
    elif raw["mode"] not in MODES:
        errs.append(FieldError("install.mode", f"{_show(raw['mode'])} is not a mode",
                               'use "wipe", "keep-data" or "upgrade"'))
    else:
        mode = raw["mode"]

    keep_config = True
    if "keep_config" in raw:
        if not isinstance(raw["keep_config"], bool):
            errs.append(_wrong_type("install.keep_config", raw["keep_config"], "true or false"))
        elif mode is not None and mode != "keep-data":
            errs.append(FieldError("install.keep_config", f'only applies to mode = "keep-data", not "{mode}"',
                                   "remove it"))
        else:
            keep_config = raw["keep_config"]
    kept = _kept_why(mode) if mode == "upgrade" or (mode == "keep-data" and keep_config) else None

    pw = raw.get("root_password_hash")
    if pw is not None:
        if (e := check_password_hash(pw)):
            errs.append(e)
        elif kept:
            errs.append(FieldError("install.root_password_hash", f"is not used with {kept[0]}",
                                   f"the host keeps its root password; {kept[1]}"))
    elif mode is not None and not kept:
        errs.append(FieldError("install.root_password_hash", "is missing",
                               f'mode = "{mode}" sets the root password: ' + HASH_HINT))

    layout = raw.get("keyboard", keyboard.DEFAULT_LAYOUT)
    if (e := keyboard.check_layout(_clip(layout) if isinstance(layout, str) else layout, "install.keyboard")):
        errs.append(e)

    after = raw.get("after", "reboot")
    if not isinstance(after, str):
        errs.append(_wrong_type("install.after", after, 'a string: "reboot", "poweroff" or "none"'))
    elif after not in AFTER:
        errs.append(FieldError("install.after", f"{_show(after)} is not a choice",
                               'use "reboot", "poweroff" or "none" (stay at the final screen)'))

    disk, disk_errs = _parse_disk(raw.get("disk"))
    errs += disk_errs

    if errs or disk is None or mode is None:
        return _Install(None, errs, kept)
    return _Install(InstallSettings(disk=disk, mode=mode, keep_config=keep_config, root_password_hash=pw or "",
                                    keyboard=layout, after=after), [], kept)


def _parse_disk(raw: object) -> tuple[DiskFilter | None, list[FieldError]]:
    fld = "install.disk"
    hint = ("add [install.disk] with at least one of by_id, model, serial, min_size, max_size, transport "
            "(the installer never picks a disk by itself; `qx-install disks` lists them)")
    if raw is None:
        return None, [FieldError(fld, "is missing", hint)]
    if not isinstance(raw, dict):
        return None, [_wrong_type(fld, raw, "a table: [install.disk]")]
    errs = _unknown_keys(raw, _DISK_KEYS, fld)
    values: dict[str, Any] = {}
    for key in ("by_id", "model", "serial"):
        if key not in raw:
            continue
        v = raw[key]
        if not isinstance(v, str):
            errs.append(_wrong_type(f"{fld}.{key}", v, "a string (a glob such as \"*Samsung*\" is allowed)"))
            continue
        if key == "by_id":
            v = v.removeprefix(BY_ID_DIR)
        if not v.strip():
            errs.append(FieldError(f"{fld}.{key}", "is empty", "give a value or remove the key"))
        elif len(v) > MAX_TEXT:
            errs.append(FieldError(f"{fld}.{key}", f"is {len(v)} characters long", f"use at most {MAX_TEXT}"))
        elif any(ord(c) < 32 or ord(c) == 127 for c in v):
            errs.append(FieldError(f"{fld}.{key}", "contains control characters", "write it on one line"))
        elif key == "by_id" and "/" in v:
            errs.append(FieldError(f"{fld}.{key}", f"{_show(v)} is not a name in {BY_ID_DIR}",
                                   "give the link's name only, e.g. \"nvme-Samsung_SSD_980_*\""))
        else:
            values[key] = v
    for key in ("min_size", "max_size"):
        if key in raw:
            size, err = _size(raw[key], f"{fld}.{key}")
            if err:
                errs.append(err)
            else:
                values[key] = size
    if "transport" in raw:
        v = raw["transport"]
        if not isinstance(v, str):
            errs.append(_wrong_type(f"{fld}.transport", v, "a string: " + ", ".join(TRANSPORTS)))
        elif v.lower() not in TRANSPORTS:
            errs.append(FieldError(f"{fld}.transport", f"{_show(v)} is not a transport",
                                   "use one of: " + ", ".join(TRANSPORTS)))
        else:
            values["transport"] = v.lower()
    lo, hi = values.get("min_size"), values.get("max_size")
    if lo is not None and hi is not None and hi < lo:
        errs.append(FieldError(f"{fld}.max_size", f"is {format_size(hi)}, smaller than min_size "
                                                  f"({format_size(lo)})", "swap them, or widen the range"))
    if not any(k in raw for k in _DISK_KEYS):
        errs.append(FieldError(fld, "names no disk", hint))
    if errs:
        return None, errs
    return DiskFilter(**values), []


def _unknown_keys(raw: Mapping[str, Any], known: tuple[str, ...], where: str) -> list[FieldError]:
    errs = []
    for k in raw:
        if k in known:
            continue
        close = difflib.get_close_matches(k, known, n=1)
        hint = (f"did you mean '{close[0]}'? " if close else "") + "known here: " + ", ".join(sorted(known))
        errs.append(FieldError(f"{where}.{_clip(k, 60)}", "is not a known setting", hint))
    return errs


def _wrong_type(fld: str, value: object, want: str) -> FieldError:
    return FieldError(fld, f"has the wrong type ({type(value).__name__})", f"expected {want}")


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(value: str) -> str:
    """A user's string for an error message: quoted, control characters escaped, long ones clipped."""
    return repr(_clip(value))
