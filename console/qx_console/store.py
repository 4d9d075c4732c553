"""The persistent host configuration on the data partition, under a root directory prefix.

Layout (``root`` is ``/`` on a host, a temporary directory in tests)::

    <root>/var/lib/quantix/config/
        hostconfig.json     the validated HostConfig (hostconfig.to_dict)
        provenance.json     {field path: source} — where each setting came from
        hostname            /etc/hostname points here
        network/            systemd-networkd files; /etc/systemd/network points here
        network.prev/       the previous network directory + hostconfig.json (for "restore previous")
        network.pending     present while a safe-apply waits for its probe/confirmation

Invariants: every file is written with :func:`atomic_write` (temp file in the same directory, fsync,
rename, fsync of the directory), so a crash leaves either the old or the new file. In ``network/`` the
new files are all written before stale ones are removed, and networkd is only told to reload after the
whole set is on disk, so it never sees a half-written set.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from qx_common.fs import atomic_write  # noqa: F401 - also this module's API (shadow, keyboard use it)
from qx_console import hostconfig, networkd
from qx_console.hostconfig import HostConfig, Provenance

CONFIG_DIR = "var/lib/quantix/config"


def snapshot_dir(path: Path) -> dict[str, str]:
    """Names and contents of the regular files in ``path`` (what tests compare)."""
    if not path.is_dir():
        return {}
    return {p.name: p.read_text() for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")}


class ConfigStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.dir = self.root / CONFIG_DIR
        self.network_dir = self.dir / "network"
        self.prev_dir = self.dir / "network.prev"
        self.pending_file = self.dir / "network.pending"
        self.config_file = self.dir / "hostconfig.json"
        self.provenance_file = self.dir / "provenance.json"
        self.hostname_file = self.dir / "hostname"

    # -- reading ----------------------------------------------------------------------------
    def load(self) -> HostConfig:
        """The stored configuration; defaults (hostname from the hostname file) when none is stored."""
        if self.config_file.exists():
            return hostconfig.parse_host_config(json.loads(self.config_file.read_text()))
        name = self.hostname_file.read_text().strip() if self.hostname_file.exists() else ""
        return HostConfig(hostname=name or hostconfig.DEFAULT_HOSTNAME)

    def provenance(self) -> Provenance:
        try:
            data = json.loads(self.provenance_file.read_text())
            return {str(k): str(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    # -- writing ----------------------------------------------------------------------------
    def save(self, cfg: HostConfig, source: str, fields: tuple[str, ...]) -> None:
        """Validate, then write hostconfig.json, hostname, network files and provenance."""
        hostconfig.validate(cfg)
        atomic_write(self.config_file, json.dumps(hostconfig.to_dict(cfg), indent=2, sort_keys=True) + "\n")
        atomic_write(self.hostname_file, cfg.hostname + "\n")
        self.write_network_files(networkd.render(cfg.network))
        prov = self.provenance()
        for f in fields:
            prov[f] = source
        atomic_write(self.provenance_file, json.dumps(prov, indent=2, sort_keys=True) + "\n")

    def write_network_files(self, files: dict[str, str]) -> None:
        self.network_dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            atomic_write(self.network_dir / name, text)
        for p in self.network_dir.iterdir():
            if p.name.startswith(networkd.PREFIX) and p.name not in files:
                p.unlink()

    # -- previous configuration (restore) ---------------------------------------------------
    def keep_previous(self) -> None:
        """Copy the current network files + hostconfig.json + provenance to network.prev/."""
        tmp = self.dir / "network.prev.new"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, text in snapshot_dir(self.network_dir).items():
            (tmp / "network").mkdir(exist_ok=True)
            atomic_write(tmp / "network" / name, text)
        for f in (self.config_file, self.provenance_file, self.hostname_file):
            if f.exists():
                atomic_write(tmp / f.name, f.read_bytes())
        (tmp / "complete").write_text("1\n")
        shutil.rmtree(self.prev_dir, ignore_errors=True)
        os.replace(tmp, self.prev_dir)

    def has_previous(self) -> bool:
        return (self.prev_dir / "complete").exists()

    def restore_previous(self) -> None:
        """Put the kept previous configuration back (files only; activation is the caller's)."""
        if not self.has_previous():
            raise FileNotFoundError(self.prev_dir)
        self.write_network_files(snapshot_dir(self.prev_dir / "network"))
        for f in (self.config_file, self.provenance_file, self.hostname_file):
            src = self.prev_dir / f.name
            if src.exists():
                atomic_write(f, src.read_bytes())
            else:
                f.unlink(missing_ok=True)

    # -- pending safe-apply marker -------------------------------------------------------------
    def mark_pending(self, info: dict[str, Any]) -> None:
        atomic_write(self.pending_file, json.dumps(info) + "\n")

    def clear_pending(self) -> None:
        self.pending_file.unlink(missing_ok=True)

    def pending(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.pending_file.read_text())
        except (OSError, ValueError):
            return None

    def reset(self) -> None:
        """Back to factory defaults: remove everything the operator configured on the data partition."""
        for f in (self.config_file, self.provenance_file, self.hostname_file, self.pending_file):
            f.unlink(missing_ok=True)
        self.write_network_files({})
        shutil.rmtree(self.prev_dir, ignore_errors=True)
