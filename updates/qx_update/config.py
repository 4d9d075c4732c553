"""qx-update configuration: a read-only default file, overridden by the host's own settings.

Order (later wins): built-in defaults → ``/usr/lib/quantix/update.toml`` (shipped in the image, or the
file given with ``--config``) → the override file named by ``override`` (default
``/var/lib/quantix/config/update.toml``, on the data partition; ``qx-update channel set`` writes it).
The override may only carry host settings (:data:`OVERRIDABLE`): channel, server, maintenance window,
and the two boot-assessment tunables an operator of slow hardware (or a lab) adjusts: how many boot
tries a new slot gets and how long its health gate waits.

Every value is validated once here; a bad value is a :class:`~qx_common.errors.UserError` naming the
file and the key. Relative paths in a config file are relative to that file's directory, so a test or
a developer can keep a config next to image files.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from qx_common import hostpaths
from qx_common.errors import UserError
from qx_common.fs import atomic_write
from qx_update.contract import CHANNELS

DEFAULT_CONFIG = Path("/usr/lib/quantix/update.toml")
DEFAULT_OVERRIDE = Path("/var/lib/quantix/config/update.toml")
OVERRIDABLE = ("channel", "server_url", "maintenance_window", "tries", "gate_timeout", "download_deadline")
_WINDOW_RE = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class Config:
    server_url: str = ""
    channel: str = "stable"
    trusted_root: Path = Path("/usr/lib/quantix/tuf-root.json")
    state_dir: Path = Path("/var/lib/quantix/update")
    esp: str = "auto"                       # a directory, or "auto" (/efi, then /boot)
    slots: dict[str, Path] = field(default_factory=lambda: {
        "a": Path("/dev/disk/by-partlabel/root-a"), "b": Path("/dev/disk/by-partlabel/root-b")})
    # Each slot's dm-verity hash partition (qx_update.seal): written with the tree of a verity release.
    verity: dict[str, Path] = field(default_factory=lambda: {
        "a": Path("/dev/disk/by-partlabel/root-a-verity"), "b": Path("/dev/disk/by-partlabel/root-b-verity")})
    # "a"/"b", or "auto": root=PARTLABEL=root-X on /proc/cmdline, or the partition its roothash= names
    running_slot: str = "auto"
    host_id_file: Path = Path("/etc/machine-id")
    health_url: str = "https://127.0.0.1:8443/health"
    health_ca: Path = hostpaths.node_cert()
    # Secure Boot (qx_update.secureboot): where the firmware's state is read and the certificate a release's
    # UKI must verify against while it is on. Not overridable: the override file is on the data partition.
    efivars_dir: Path = hostpaths.EFIVARS_DIR
    secure_boot_cert: Path = hostpaths.SECURE_BOOT_CERT
    gate_timeout: float = 600.0
    maintenance_window: str = ""            # "HH:MM-HH:MM" (local time), empty = any time
    tries: int = 3                          # systemd boot-assessment tries of a new slot
    download_deadline: float = 3600.0       # s an artifact download may take in all (qx_update.deadline)
    # A token with the server's "checkin" scope: present = report to the fleet view (qx_update.checkin).
    checkin_token_file: Path = Path("/var/lib/quantix/config/update-checkin-token")
    override: Path = DEFAULT_OVERRIDE
    source: Path | None = None              # the file the base settings came from (for messages)

    @property
    def metadata_dir(self) -> Path:
        return self.state_dir / "metadata"

    @property
    def download_dir(self) -> Path:
        return self.state_dir / "downloads"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"


def _bad(src: Path | str, key: str, why: str, hint: str) -> UserError:
    return UserError(f"{src}: '{key}' {why}", hint=hint)


def parse_window(value: str) -> tuple[dt.time, dt.time] | None:
    """``"02:00-04:00"`` → (start, end); ``""`` → None (reboots allowed at any time)."""
    if not value:
        return None
    m = _WINDOW_RE.match(value.strip())
    if not m:
        raise ValueError(value)
    h1, m1, h2, m2 = (int(x) for x in m.groups())
    return dt.time(h1, m1), dt.time(h2, m2)


def in_window(window: str, now: dt.datetime) -> bool:
    parsed = parse_window(window)
    if parsed is None:
        return True
    start, end = parsed
    t = now.time()
    return start <= t < end if start <= end else (t >= start or t < end)  # a window may span midnight


def _apply(cfg: Config, data: dict[str, object], src: Path, *, override: bool) -> Config:
    base = src.parent
    changes: dict[str, object] = {}

    def path(key: str, value: object) -> Path:
        if not isinstance(value, str) or not value:
            raise _bad(src, key, "must be a non-empty path string", f'for example {key} = "/var/lib/quantix/update"')
        p = Path(value)
        return p if p.is_absolute() else base / p

    for key, value in data.items():
        if override and key not in OVERRIDABLE:
            raise _bad(src, key, "cannot be set in the host override file",
                       f"only {', '.join(OVERRIDABLE)} may be set here")
        if key == "channel":
            if value not in CHANNELS:
                raise _bad(src, key, f"is {value!r}, not a channel", f"use one of: {', '.join(CHANNELS)}")
            changes[key] = value
        elif key == "server_url":
            if not isinstance(value, str) or not re.match(r"^(https?|file)://", value):
                raise _bad(src, key, f"is {value!r}, not an http(s) URL", 'for example server_url = "https://updates.example/"')
            changes[key] = value.rstrip("/") + "/"
        elif key == "maintenance_window":
            try:
                parse_window(str(value))
            except ValueError:
                raise _bad(src, key, f"is {value!r}", 'use "HH:MM-HH:MM" (local time) or "" for any time') from None
            changes[key] = str(value)
        elif key in ("trusted_root", "state_dir", "host_id_file", "health_ca", "override", "checkin_token_file",
                     "efivars_dir", "secure_boot_cert"):
            changes[key] = path(key, value)
        elif key == "esp":
            changes[key] = "auto" if value == "auto" else str(path(key, value))
        elif key in ("slots", "verity"):
            if not isinstance(value, dict) or set(value) != {"a", "b"}:
                default = getattr(Config(), key)
                raise _bad(src, key, "must be a table with exactly the keys a and b",
                           f'[{key}]\na = "{default["a"]}"\nb = "{default["b"]}"')
            paths = {k: path(f"{key}.{k}", v) for k, v in value.items()}
            if paths["a"] == paths["b"]:
                raise _bad(src, key, "names the same device for both slots", "give slot a and b different devices")
            changes[key] = paths
        elif key == "running_slot":
            if value not in ("auto", "a", "b"):
                raise _bad(src, key, f"is {value!r}", 'use "auto", "a" or "b"')
            changes[key] = value
        elif key in ("health_url",):
            if not isinstance(value, str) or not re.match(r"^https?://", value):
                raise _bad(src, key, f"is {value!r}, not an http(s) URL", 'for example "https://127.0.0.1:8443/health"')
            changes[key] = value
        elif key == "gate_timeout":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise _bad(src, key, f"is {value!r}", "give a number of seconds > 0")
            changes[key] = float(value)
        elif key == "download_deadline":
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 1 <= value <= 86400:
                raise _bad(src, key, f"is {value!r}",
                           "give the seconds one download may take, from 1 to 86400 (default 3600)")
            changes[key] = float(value)
        elif key == "tries":
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10:
                raise _bad(src, key, f"is {value!r}", "give a number of boot tries from 1 to 10")
            changes[key] = value
        else:
            raise _bad(src, key, "is not a known setting", "see /usr/lib/quantix/update.toml for the settings")
    new = replace(cfg, **changes)  # type: ignore[arg-type]
    if "slots" in changes or "verity" in changes:
        # A slot written as another's hash partition (or the reverse) would destroy it: checked on the
        # result, since either table may come from the defaults or another file.
        clash = sorted({str(p) for p in new.slots.values()} & {str(p) for p in new.verity.values()})
        if clash:
            raise _bad(src, "verity", f"names {clash[0]}, which is also a slot",
                       "give each slot's verity (hash) partition its own device, not a slot's")
    return new


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: not valid TOML: {e}", hint="fix the file's syntax") from e
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}", hint="check the --config path") from e


def load(path: Path | None = None) -> Config:
    """Load the base config (``path`` or the image default) and the host override on top."""
    src = path or DEFAULT_CONFIG
    cfg = Config(source=src)
    if path is not None or src.exists():
        cfg = _apply(cfg, _read_toml(src), src, override=False)
    if cfg.override.exists():
        cfg = _apply(cfg, _read_toml(cfg.override), cfg.override, override=True)
    return cfg


def set_override(cfg: Config, key: str, value: str) -> Config:
    """Set one host setting in the override file (validated first; the file is replaced atomically)."""
    data: dict[str, object] = _read_toml(cfg.override) if cfg.override.exists() else {}
    data[key] = value
    new = _apply(cfg, data, cfg.override, override=True)  # raises before anything is written
    lines = ["# Host update settings (written by qx-update; overrides /usr/lib/quantix/update.toml)\n"]
    # json.dumps of a str, an int or a finite float is valid TOML of the same type.
    lines += [f"{k} = {json.dumps(data[k] if isinstance(data[k], (int, float)) else str(data[k]))}\n"
              for k in sorted(data)]
    atomic_write(cfg.override, "".join(lines))
    return new
