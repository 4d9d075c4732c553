"""Bad input and a machine that is not ready: one-line errors with a hint, nothing written."""

from __future__ import annotations

import os
import socket
import time
import subprocess
from pathlib import Path

import pytest

from qx_build import preflight, qemu
from qx_build.paths import REPO
from qx_common.errors import EnvironmentError_, UserError

QXB = str(REPO / ".venv/bin/qx-build")


def test_missing_tool_names_the_package() -> None:
    with pytest.raises(EnvironmentError_) as e:
        preflight.require_tools(("definitely-not-a-tool-qx",))
    assert "definitely-not-a-tool-qx" in e.value.message and "apt-get install" in (e.value.hint or "")


def test_unreachable_mirror_is_one_clear_error() -> None:
    # A closed port on loopback: refused at once, no traffic leaves the machine.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(EnvironmentError_, match="mirror is unreachable"):
        preflight.require_mirror(f"http://127.0.0.1:{port}/debian/dists/trixie/InRelease", timeout=5)


def test_not_root_stops_before_writing(tmp_path: Path) -> None:
    build_dir = tmp_path / "b"
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", QXB,
                           "--build-dir", str(build_dir), "preflight"], capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "qx-build: error: building the image needs root (mkosi, loop devices)"
    assert lines[1].startswith("qx-build: hint:") and "Traceback" not in proc.stderr
    assert not build_dir.exists()


def test_missing_mkosi_on_path_is_an_environment_error(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": "/nonexistent"}
    proc = subprocess.run([QXB, "--build-dir", str(tmp_path / "b"), "preflight"], capture_output=True, text=True,
                          env=env)
    assert proc.returncode == 3 and "required program 'mkosi' was not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_security_epoch_is_refused_by_name() -> None:
    proc = subprocess.run([QXB, "image", "--security-epoch", "-1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "SECURITY_EPOCH=-1 is out of range" in proc.stderr


@pytest.mark.parametrize(("var", "msg"), [("ACCEL=warp", "ACCEL=warp is not one of"),
                                          ("MEMORY=lots", "MEMORY=lots is not a number"),
                                          ("SECURITY_EPOCH=x", "SECURITY_EPOCH=x is not a whole number")])
def test_make_refuses_unknown_variable_values(var: str, msg: str) -> None:
    proc = subprocess.run(["make", "-C", str(REPO), var, "boot"], capture_output=True, text=True)
    assert proc.returncode != 0 and msg in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_accel_resolution() -> None:
    with pytest.raises(UserError, match="ACCEL=warp"):
        qemu.resolve_accel("warp")
    assert qemu.resolve_accel("tcg") == "tcg"
    assert qemu.resolve_accel("auto") == ("kvm" if qemu.kvm_usable() else "tcg")


def test_machine_argv_uses_a_private_overlay_and_isolated_network(tmp_path: Path) -> None:
    disk = tmp_path / "d.raw"
    disk.write_bytes(b"\0" * 1024 * 1024)
    m = qemu.Machine(tmp_path / "m", disk=disk, accel="tcg", serial_log=tmp_path / "serial.log")
    m.prepare()
    argv = m.argv()
    assert (tmp_path / "m" / "disk.qcow2").exists() and (tmp_path / "m" / "vars.fd").exists()
    assert "tcg" in argv and "max" in argv
    assert any("restrict=on" in a for a in argv), "guest networking must not reach outside"
    assert not any(str(disk) == a.split("file=")[-1] for a in argv), "the image itself is never attached"


def _bootable_disk(path: Path) -> None:
    """A GPT disk whose ESP holds systemd-boot as the removable-media loader: one the firmware can boot."""
    path.write_bytes(b"")
    os.truncate(path, 40 * 1024 * 1024)
    subprocess.run(["sfdisk", "-q", str(path)], input="label: gpt\nstart=2048, type=uefi\n", text=True, check=True)
    esp = f"{path}@@{2048 * 512}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mformat", "-i", esp, "-F", "-T", str(40 * 2048 - 2048 - 34), "::"], check=True, env=env)
    subprocess.run(["mmd", "-i", esp, "::/EFI", "::/EFI/BOOT"], check=True, env=env)
    subprocess.run(["mcopy", "-i", esp, "/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "::/EFI/BOOT/BOOTX64.EFI"],
                   check=True, env=env)


def test_a_usb_stick_is_first_in_the_firmware_boot_order(tmp_path: Path) -> None:
    """A machine with a bootable virtio disk (an installed host) and a USB stick (an ISO written with dd)
    tries the stick first, as an operator who picked it in the boot menu would. The real firmware logs
    which device it tries first; the stick is blank, so its attempt fails and is logged."""
    disk, stick = tmp_path / "d.raw", tmp_path / "stick.raw"
    _bootable_disk(disk)
    stick.write_bytes(b"\0" * 1024 * 1024)
    serial = tmp_path / "serial.log"
    # The target disk is attached as in the install e2e: a virtio disk on a lower PCI slot than the stick.
    m = qemu.Machine(tmp_path / "m", drives=[(disk, "raw", "qx-target")], usb=stick, accel="tcg", memory_mb=512,
                     cpus=1, serial_log=serial)
    m.prepare()
    argv = m.argv()
    assert (tmp_path / "m" / "usb.qcow2").exists(), "the stick goes through an overlay"
    assert not any(a.endswith(f"file={stick}") for a in argv), "the stick image itself is never attached"
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    text = first = ""
    try:
        for _ in range(1200):  # the firmware reaches its boot manager in seconds even under TCG
            text = serial.read_bytes().decode("utf-8", "replace") if serial.exists() else ""
            attempts = [ln for ln in text.splitlines() if "BdsDxe: " in ln]
            if attempts:
                first = attempts[0]
                break
            if proc.poll() is not None:
                pytest.fail(f"QEMU exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.1)
        assert "USB" in first, f"the firmware tried another device first: {first or text[-2000:]}"
    finally:
        proc.kill()
        proc.wait()
