"""qx-update's public, typed results: what every command reports, in Python and as ``--json``.

Each command of :class:`qx_update.client.Client` returns one of these frozen dataclasses, and
``qx-update --json <command>`` prints exactly that object serialised (:meth:`Model.to_json`), so a
program reading the JSON and one calling :mod:`qx_update` get the same fields. Other packages (the
console, the installer) read qx-update's output only through :meth:`Model.from_json` /
:meth:`Model.from_dict`, never by picking keys out of a dict.

Invariants:

* Every serialised object carries ``schema_version`` (:data:`SCHEMA_VERSION`). It is raised whenever a
  field is removed or changes meaning (adding a field does not raise it); :meth:`Model.from_dict`
  refuses any other version, so a reader never misreads a newer writer.
* ``from_dict(to_dict(x)) == x`` for every model; ``from_dict`` checks every field's type and refuses
  missing or unknown fields with a :class:`SchemaError` naming the field (the reader is of the same
  release as the writer: both ship in one image).
* ``apply --json`` prints :class:`ProgressEvent` lines (``"event": "progress"``) and then one
  :class:`ApplyResult`; :func:`read_apply_line` tells them apart. A failed command prints an
  :class:`ErrorReport` on stdout (and the usual ``error:``/``hint:`` lines on stderr).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union

from qx_common.errors import ExternalError

SCHEMA_VERSION = 1

# What status says about this host, first match wins (Client.status): the console shows it as is.
State = Literal["no-trusted-root", "rolled-back", "reboot-pending", "on-trial", "update-available",
                "check-failed", "up-to-date", "not-checked"]
CheckResultKind = Literal["up-to-date", "available", "error"]

M = TypeVar("M", bound="Model")


class SchemaError(ExternalError):
    """qx-update printed something that is not the documented model (another version, or a bug)."""


class Model:
    """Serialisation shared by every result: dataclass fields ↔ JSON, strictly typed on the way in."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self, *, compact: bool = False) -> str:
        if compact:
            return json.dumps(self.to_dict(), sort_keys=True)
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls: type[M], data: object, where: str = "") -> M:
        return _decode(cls, data, where or cls.__name__)  # type: ignore[no-any-return]

    @classmethod
    def from_json(cls: type[M], text: str) -> M:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise SchemaError(f"qx-update printed no JSON {cls.__name__}: {e}") from e
        return cls.from_dict(data)


class Versioned(Model):
    """A top-level result: it carries ``schema_version``, checked on reading."""

    schema_version: int

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise SchemaError(f"{type(self).__name__}.schema_version: {self.schema_version!r} is not "
                              f"{SCHEMA_VERSION}", hint="the console and qx-update must come from the same image")


# ---- status ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlotStatus(Model):
    device: str
    version: str | None               # the release its boot entry names; None: no boot entry
    active: bool                      # the running slot
    next_boot: bool                   # systemd-boot's default
    blessed: bool
    bad: bool                         # boot tries used up (or marked bad by a rollback)
    tries_left: int | None
    tries_done: int | None
    entry: str | None                 # the entry's file name on the ESP
    security_epoch: int | None


@dataclass(frozen=True)
class LastCheck(Model):
    at: str
    result: CheckResultKind
    version: str | None = None        # what the check found (result "available")
    error: str | None = None          # why it failed (result "error")


@dataclass(frozen=True)
class ErrorRecord(Model):
    at: str
    message: str


@dataclass(frozen=True)
class PendingUpdate(Model):
    """An installed update not yet proven: in the other slot it awaits a reboot, in the running slot
    it is on trial (not blessed yet)."""

    slot: str
    version: str
    security_epoch: int | None
    from_slot: str
    from_version: str
    at: str


@dataclass(frozen=True)
class RollbackRecord(Model):
    from_version: str
    from_slot: str
    to_slot: str
    reason: str
    at: str | None = None             # an operator's rollback
    detected_at: str | None = None    # an automatic one, seen from the boot entries


@dataclass(frozen=True)
class RefusedRelease(Model):
    reason: str
    at: str
    # rolled-back: its trial boot failed here; secure-boot: its UKI does not verify against the certificate
    # this host trusts while Secure Boot is on (its firmware would not boot it). Both until 'allow'.
    cause: Literal["rolled-back", "secure-boot"] = "rolled-back"

    def sentence(self) -> str:
        """Why the release is not offered here, for ``check``'s skipped list and ``status``."""
        if self.cause == "secure-boot":
            return f"its UKI would not boot under this host's Secure Boot ({self.reason})"
        return f"this host rolled back from it ({self.reason})"


@dataclass(frozen=True)
class CheckinRecord(Model):
    at: str
    event: str
    ok: bool
    detail: str


SecureBootState = Literal["enabled", "disabled", "no-uefi", "unknown"]


@dataclass(frozen=True)
class SecureBootStatus(Model):
    """Whether this host booted with Secure Boot on, and so whether apply checks a release's UKI
    signature against the certificate the image shipped (:mod:`qx_update.secureboot`)."""

    state: SecureBootState            # "unknown": the EFI variable could not be read (``note`` says why)
    checks_releases: bool             # apply refuses a UKI that does not verify against certificate_file
    certificate_file: str
    certificate_present: bool
    note: str                         # one sentence for an operator


@dataclass(frozen=True)
class UpdateStatus(Versioned):
    """``qx-update status``: the running slot and release, the boot entries, what the last check found."""

    schema_version: int
    state: State
    message: str                      # why: one sentence for an operator
    channel: str
    server_url: str
    running_slot: str
    running_version: str
    default_slot: str | None
    security_epoch_floor: int
    maintenance_window: str
    trusted_root: bool
    esp_error: str | None
    last_check: LastCheck | None
    last_error: ErrorRecord | None
    last_checkin: CheckinRecord | None
    pending: PendingUpdate | None
    rollback: RollbackRecord | None
    refused: dict[str, RefusedRelease]
    slots: dict[str, SlotStatus]
    secure_boot: SecureBootStatus | None = None

    @property
    def awaiting_reboot(self) -> str | None:
        """The version installed in the other slot that the next boot starts, if any."""
        p = self.pending
        if p is not None and p.slot != self.running_slot and self.default_slot == p.slot:
            return p.version
        return None

    @property
    def available(self) -> str | None:
        """The version the last check found, unless it is installed already or running."""
        lc = self.last_check
        if lc is None or lc.result != "available" or not lc.version:
            return None
        installed = {s.version for s in self.slots.values() if not s.bad}
        return None if lc.version in installed | {self.running_version} else lc.version


# ---- check / apply / rollback / the rest ---------------------------------------------------------

@dataclass(frozen=True)
class ReleaseSummary(Model):
    version: str
    security_epoch: int
    slot_size: int
    download_size: int
    notes: str


@dataclass(frozen=True)
class SkippedRelease(Model):
    version: str
    reason: str


@dataclass(frozen=True)
class CheckResult(Versioned):
    schema_version: int
    running_version: str
    channel: str
    available: ReleaseSummary | None
    installed: bool                   # the release found is in the other slot already
    skipped: list[SkippedRelease]
    metadata_refresh_s: float
    message: str


TransferPath = Literal["delta", "full-stream", "payload", "cached"]


@dataclass(frozen=True)
class Transfer(Model):
    """How one image of an applied release reached the host (docs/update-format.md §5): ``delta`` — only
    the chunks no seed held were fetched; ``full-stream`` — the whole target in one stream, checked chunk
    by chunk against the signed index; ``payload`` — the whole target as a file (no chunk index: an older
    release or an offline copy without chunks); ``cached`` — already whole and verified in the download
    cache (an interrupted earlier apply fetched it)."""

    image: Literal["root", "uki"]
    path: TransferPath
    size: int              # bytes of the image written (the slot image, the UKI)
    fetched_bytes: int     # bytes this apply received from the network for it: data and its chunk indexes
    reused_bytes: int      # bytes taken from the host's own slots, UKIs or an earlier interrupted apply


@dataclass(frozen=True)
class ApplyResult(Versioned):
    schema_version: int
    applied: ReleaseSummary | None    # None: nothing was written
    slot: str | None
    entry: str | None
    next_boot: str | None
    skipped: list[SkippedRelease]
    message: str
    reboot: str | None = None         # with --reboot: what was done or scheduled
    transfer: list[Transfer] = field(default_factory=list)  # one per image written; [] when none was


@dataclass(frozen=True)
class RollbackResult(Versioned):
    schema_version: int
    rolled_back: bool                 # False: an update not booted yet was cancelled instead
    cancelled: str | None
    from_version: str | None
    to_version: str | None
    next_boot: str | None
    message: str
    reboot: str | None = None


@dataclass(frozen=True)
class ChannelResult(Versioned):
    schema_version: int
    channel: str
    file: str | None                  # the override file written (None: only shown)


@dataclass(frozen=True)
class GateResult(Versioned):
    schema_version: int
    ok: bool
    reason: str
    slot: str
    counted_boot: bool


@dataclass(frozen=True)
class BlessedResult(Versioned):
    schema_version: int
    slot: str
    blessed: bool
    security_epoch_floor: int
    rollback: RollbackRecord | None


@dataclass(frozen=True)
class AllowResult(Versioned):
    schema_version: int
    allowed: str
    message: str


@dataclass(frozen=True)
class CheckinResult(Versioned):
    schema_version: int
    at: str
    event: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ProgressEvent(Versioned):
    """One line of ``apply --json`` while it downloads and writes (one per percent)."""

    schema_version: int
    phase: str
    done: int
    total: int
    percent: int
    message: str
    event: Literal["progress"] = "progress"

    @property
    def fraction(self) -> float:
        return max(0.0, min(1.0, self.done / self.total)) if self.total > 0 else 0.0


@dataclass(frozen=True)
class ErrorReport(Versioned):
    """What a failed command prints on stdout with ``--json`` (exit code as documented)."""

    schema_version: int
    error: str
    hint: str | None
    exit_code: int
    kind: str = field(default="error")


def read_apply_line(line: str) -> ProgressEvent | ApplyResult | ErrorReport | None:
    """One line of ``qx-update --json apply``: progress, the result, the error, or None (not JSON)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if data.get("event") == "progress":
        return ProgressEvent.from_dict(data)
    if data.get("kind") == "error":
        return ErrorReport.from_dict(data)
    return ApplyResult.from_dict(data)


# ---- strict decoding ------------------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _decode(tp: Any, value: object, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {type(value).__name__}")
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise SchemaError(f"{where}: unknown field {unknown[0]!r}",
                              hint="the console and qx-update must come from the same image")
        hints = _hints(tp)
        kwargs = {}
        for name, f in fields.items():
            if name not in value:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise SchemaError(f"{where}.{name}: missing")
                continue
            kwargs[name] = _decode(hints[name], value[name], f"{where}.{name}")
        return tp(**kwargs)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _decode(a, value, where)
            except SchemaError as e:
                errors.append(e.message)
        raise SchemaError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of its types")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise SchemaError(f"{where}: {value!r} is not one of {', '.join(map(str, typing.get_args(tp)))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list")
        (item,) = typing.get_args(tp)
        return [_decode(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object")
        _, item = typing.get_args(tp)
        return {str(k): _decode(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"{where}: {value!r} is not a number")
        return float(value)
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise SchemaError(f"{where}: {value!r} is not {tp.__name__}")
        return value
    raise SchemaError(f"{where}: cannot read type {tp!r}")  # a model with a type this reader lacks: a bug



# ---- the functions (in-process callers; the CLI prints the same results) --------------------------
# client and config are imported inside: this module is imported by them (the result types), and a
# caller that only reads results (the console parsing --json) needs none of the workflow code.

if typing.TYPE_CHECKING:
    from pathlib import Path

    from qx_update.config import Config
    from qx_update.esp import EspFiles


def load_config(path: Path | None = None) -> Config:
    """qx-update's settings: ``path`` (default ``/usr/lib/quantix/update.toml``) plus the host override."""
    from qx_update import config

    return config.load(path)


def status(cfg: Config) -> UpdateStatus:
    """What ``qx-update status`` reports; reads only (no lock: safe while an apply runs)."""
    from qx_update.client import Client

    return Client(cfg, progress=False).status()


def check(cfg: Config, source: Path | None = None) -> CheckResult:
    """Refresh the signed metadata (from the server, or an offline copy) and say what would be installed."""
    from qx_update.client import Client

    with Client(cfg, progress=False).locked() as c:
        return c.check(source)


def apply(cfg: Config, source: Path | None = None) -> ApplyResult:
    """Install the newest eligible release into the inactive slot (no reboot)."""
    from qx_update.client import Client

    with Client(cfg, progress=False).locked() as c:
        return c.apply(source)


def rollback(cfg: Config) -> RollbackResult:
    """Boot the other slot next, or cancel an installed update that was not booted yet."""
    from qx_update.client import Client

    with Client(cfg, progress=False).locked() as c:
        return c.rollback()


def set_channel(cfg: Config, name: str) -> ChannelResult:
    from qx_update.client import Client

    with Client(cfg, progress=False).locked() as c:
        return c.channel_set(name)


@dataclass(frozen=True)
class BootEntries(Model):
    """The Quantix boot entries on an ESP: what the installer reads from a disk that is not this host's
    (for this host, :func:`status` says it all)."""

    versions: dict[str, str]          # slot -> the version its entry names ("?" when it names none)
    default_slot: str | None          # what systemd-boot starts first; None: no Quantix entry


def read_boot_entries(files: EspFiles) -> BootEntries:
    """The boot entries through ``files`` (:class:`~qx_update.espfat.FatFiles` for an unmounted FAT
    partition, or a directory); a :class:`~qx_common.errors.QxError` when the ESP cannot be read."""
    from qx_update.esp import Esp

    e = Esp(files)
    return BootEntries(versions={s: ent.version for s, ent in e.slots().items()}, default_slot=e.default_slot())
