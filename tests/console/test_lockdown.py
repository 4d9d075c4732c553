"""Lockdown mode on the real backend: the file of qx_common.hostpaths under the host root, sshd stopped
through the systemd concern, SSH refused (turning on, restarting) while it exists.

systemd is not PID 1 on a build machine: ``systemctl`` here is a script on PATH that records its
arguments (the boundary that cannot run here); everything else is the real backend on a real tree."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from qx_common import hostpaths
from qx_common.errors import UserError
from qx_console.hostconfig import SshConfig
from qx_console.linux import LinuxBackend


@pytest.fixture
def systemctl_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "systemctl.log"
    for name in ("systemctl", "systemd-run"):
        script = bindir / name
        script.write_text(f"#!/bin/sh\necho \"{name} $*\" >> {log}\n"
                          "case \"$1\" in show) echo ActiveState=active; echo SubState=running;; esac\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_lockdown_writes_the_shared_file_stops_ssh_and_refuses_it(hostroot: Path, systemctl_log: Path) -> None:
    be = LinuxBackend(hostroot)
    flag = hostroot / hostpaths.lockdown_file().relative_to("/")
    assert not be.lockdown()
    be.set_lockdown(True)
    assert flag.is_file() and be.lockdown()
    assert "systemctl stop ssh.service qx-ssh-off.timer" in systemctl_log.read_text().splitlines()
    cfg = json.loads(be.store.config_file.read_text())
    assert cfg["lockdown"] is True and be.store.provenance()["lockdown"] == "console"
    # SSH: turning it on and restarting it are refused before systemctl is asked
    before = systemctl_log.read_text()
    with pytest.raises(UserError) as ei:
        be.set_ssh(True, 10)
    assert "lockdown mode is on" in ei.value.message and "Lockdown Mode" in (ei.value.hint or "")
    cfg = be.load_config()[0]
    be.save_config(replace(cfg, ssh=SshConfig(True, 10)), ("ssh",))  # SSH access on in the settings
    with pytest.raises(UserError) as ei:
        be.restart_service("ssh")
    assert "lockdown mode is on" in ei.value.message
    assert systemctl_log.read_text().count("start") == before.count("start")
    assert "try-restart" not in systemctl_log.read_text()
    # off: the file goes, SSH is not started by it
    be.set_lockdown(False)
    assert not flag.exists() and not be.lockdown()
    assert "systemctl start ssh.service" not in systemctl_log.read_text()
    be.set_lockdown(False)  # off twice is no error
    be.set_ssh(True, 10)
    assert "systemctl start ssh.service" in systemctl_log.read_text().splitlines()


def test_the_image_keeps_sshd_down_on_the_same_file() -> None:
    """Defence in depth on the booted image: ssh.service's drop-in names the one lockdown file."""
    dropin = (Path(__file__).parents[2] / "image/extra/usr/lib/systemd/system/ssh.service.d"
              / "10-quantix-lockdown.conf")
    lines = [ln.strip() for ln in dropin.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines == ["[Unit]", f"ConditionPathExists=!{hostpaths.lockdown_file()}"]
