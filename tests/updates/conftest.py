"""Fixtures for qx-update: a signed repository served on 127.0.0.1, and a host made of files.

The host is what qx-update sees on a real machine, as files: an ESP directory with slot A's entry
(factory release 1.0.0, blessed), two slot images (A holds 1.0.0, B is empty), a state directory and a
config file pointing at all of it. The CLI runs as a real subprocess (``python -m qx_update``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qx_update import bootentry as be
from tests.updates.httpserver import Served, serve
from tests.updates.tufrepo import CMDLINE, TufRepo

SLOT_SIZE = 8 * 1024 * 1024
PAYLOAD = 6 * 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[2]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Host:
    dir: Path
    esp: Path
    slots: dict[str, Path]
    state_dir: Path
    config: Path
    server_url: str
    extra: str = ""
    # Each slot's dm-verity partition ([verity] in the config); None: the config leaves it out (the
    # defaults, /dev/disk/by-partlabel/root-X-verity, which a test machine does not have).
    verity: dict[str, Path] | None = None

    def write_config(self, *, running: str = "a", secure_boot_paths: bool = True, **kw: Any) -> None:
        """``secure_boot_paths`` False: leave out efivars_dir/secure_boot_cert, which qx-update before
        them refuses as unknown settings (a bench's baseline tree); the host's real paths apply then."""
        sb = {"efivars_dir": str(self.dir / "efivars"),
              "secure_boot_cert": str(self.dir / "secureboot" / "db.crt")} if secure_boot_paths else {}
        settings = {"server_url": self.server_url, "channel": "stable", "trusted_root": str(self.dir / "root.json"),
                    "state_dir": str(self.state_dir), "esp": str(self.esp), "running_slot": running,
                    "host_id_file": str(self.dir / "machine-id"), "override": str(self.dir / "override.toml"),
                    "health_url": "http://127.0.0.1:9/health", "gate_timeout": 1.0,
                    # The host's firmware and Secure Boot certificate, as files (qx_update.secureboot):
                    # no efivars directory = booted without UEFI, until a test calls secure_boot().
                    **sb, **kw}
        lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        lines += ["[slots]", f'a = "{self.slots["a"]}"', f'b = "{self.slots["b"]}"']
        if self.verity is not None:
            lines += ["[verity]", f'a = "{self.verity["a"]}"', f'b = "{self.verity["b"]}"']
        self.config.write_text("\n".join(lines) + "\n")

    def with_verity(self, paths: dict[str, Path] | None = None) -> Host:
        """Give the host verity partitions (``paths``, or empty files beside the slot images) and write
        the config again."""
        if paths is None:
            paths = {s: self.dir / f"verity-{s}.img" for s in ("a", "b")}
            for p in paths.values():
                p.touch()
        self.verity = paths
        self.write_config()
        return self

    def run(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO_ROOT / d) for d in ("updates", "common")] + [str(REPO_ROOT)]), **(env or {})}
        full_env.pop("QX_DEBUG", None)
        proc = subprocess.run([sys.executable, "-m", "qx_update", "--config", str(self.config), *args],
                              capture_output=True, text=True, env=full_env, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"qx-update {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str, **kw: Any) -> dict[str, Any]:
        """The command's JSON result (for apply: the last line, after the JSON-lines progress)."""
        out = self.run("--json", *args, **kw).stdout
        return json.loads(out.strip().splitlines()[-1] if args and args[0] == "apply" else out)

    def secure_boot(self, on: bool, cert: Path | None = None) -> None:
        """The host booted by UEFI with Secure Boot on or off (the SecureBoot variable as efivarfs shows
        it: 4 attribute bytes, then the value), trusting ``cert`` (the certificate its image shipped)."""
        from qx_update.secureboot import SECURE_BOOT_VAR

        d = self.dir / "efivars"
        d.mkdir(exist_ok=True)
        (d / SECURE_BOOT_VAR).write_bytes(b"\x06\x00\x00\x00" + bytes([1 if on else 0]))
        if cert is not None:
            dst = self.dir / "secureboot" / "db.crt"
            dst.parent.mkdir(exist_ok=True)
            dst.write_bytes(cert.read_bytes())

    def entries(self) -> list[str]:
        return sorted(p.name for p in (self.esp / be.ENTRIES_DIR).iterdir())

    def fingerprint(self) -> dict[str, Any]:
        """What must not change when an update is refused: slot A, and the ESP's entries."""
        return {"slot_a": sha(self.slots["a"]), "entries": self.entries(),
                "entry_a": (self.esp / be.ENTRIES_DIR / "quantix-a.conf").read_text()}


@pytest.fixture
def repo(tmp_path: Path) -> TufRepo:
    return TufRepo(tmp_path / "repo")


@pytest.fixture
def server(repo: TufRepo) -> Iterator[Served]:
    s = serve(repo.base)
    yield s
    s.close()


def make_host(base: Path, root_bytes: bytes, server_url: str) -> Host:
    base.mkdir(parents=True, exist_ok=True)
    esp = base / "esp"
    (esp / be.ENTRIES_DIR).mkdir(parents=True)
    (esp / be.UKI_DIR).mkdir(parents=True)
    (esp / be.LOADER_CONF).write_text(be.render_loader_conf())
    (esp / be.uki_path("1.0.0")).write_bytes(b"MZ factory UKI")
    (esp / be.ENTRIES_DIR / "quantix-a.conf").write_text(
        be.render_entry(version="1.0.0", slot="a", base_cmdline=CMDLINE))
    slots = {}
    for s in ("a", "b"):
        p = base / f"slot-{s}.img"
        with p.open("wb") as f:
            if s == "a":
                f.write(b"FACTORY-1.0.0" * 1000)
            f.truncate(SLOT_SIZE)
        slots[s] = p
    (base / "root.json").write_bytes(root_bytes)
    (base / "machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    host = Host(base, esp, slots, base / "state", base / "update.toml", server_url)
    host.write_config()
    return host


@pytest.fixture
def host(tmp_path: Path, repo: TufRepo, server: Served) -> Host:
    return make_host(tmp_path / "host", repo.root_bytes, server.url)


def payload(seed: int, size: int = PAYLOAD) -> bytes:
    """Incompressible, reproducible slot bytes for a release."""
    import random

    return random.Random(seed).randbytes(size)
