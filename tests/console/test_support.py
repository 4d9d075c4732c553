"""The support bundle: secrets planted on a host tree never appear in the extracted bundle; the bundle
is written whole (no temp file left, 0600) under the data partition's support directory; removable
devices are found through lsblk and sysfs, and a real mounted loop device marked removable gets a copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from qx_common import hostpaths
from qx_console import shadow
from qx_console.hostconfig import HostConfig
from qx_console.linux import LinuxBackend
from qx_console.support import Redactor, make_bundle, read_bundle, removable_devices

TOKEN = "qxnode-T0ken-7f3a9c1e5b2d4f6a8c0e"
SECRET_PW = "Sup3r-Secret-Pw-42"


def _private_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def planted(hostroot: Path) -> dict[str, str]:
    """Secrets where a host keeps them, and copies of them where they do not belong."""
    LinuxBackend(hostroot).save_config(HostConfig(hostname="qx-test"), ("hostname",))
    node = hostroot / hostpaths.NODE_STATE_DIR.relative_to("/")
    (node / "tls").mkdir(parents=True)
    key_pem = _private_pem()
    (node / "tls/key.pem").write_text(key_pem)
    (node / "tls/cert.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIBpublic\n-----END CERTIFICATE-----\n")
    (node / "api-token").write_text(TOKEN + "\n")
    cfg = hostroot / hostpaths.CONFIG_DIR.relative_to("/")
    ssh = cfg / "ssh/etc/ssh"
    ssh.mkdir(parents=True)
    host_key = _private_pem().replace("PRIVATE KEY", "OPENSSH PRIVATE KEY")
    (ssh / "ssh_host_ed25519_key").write_text(host_key)
    (ssh / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAAC3NzaPUBLIC root@qx-test\n")
    other_hash = shadow.hash_password("another-password")
    embedded_key = _private_pem()
    (cfg / "notes.txt").write_text(
        f"curl -H 'Authorization: Bearer {TOKEN}' https://host\npassword={SECRET_PW}\n"
        f"root_password_hash = \"{other_hash}\"\n{embedded_key}\nthe API token is {TOKEN}\n")
    (cfg / "update-checkin-token").write_text("qxu-checkin-9d8c7b6a5f4e3d2c1b0a\n")  # a bare value, no key=
    (cfg / "answer.json").write_text(json.dumps({"install": {"root_password_hash": other_hash},
                                                 "api": {"token": TOKEN, "secret": SECRET_PW}}))
    root_hash = (hostroot / "etc/shadow").read_text().splitlines()[0].split(":")[1]
    return {"token": TOKEN, "pw": SECRET_PW, "checkin": "qxu-checkin-9d8c7b6a5f4e3d2c1b0a", "root_hash": root_hash, "other_hash": other_hash,
            "key": key_pem.splitlines()[1], "host_key": host_key.splitlines()[1],
            "embedded_key": embedded_key.splitlines()[1]}


def members(path: Path) -> dict[str, bytes]:
    return {name.split("/", 1)[1]: data for name, data in read_bundle(path)}


def test_planted_secrets_never_reach_the_bundle(hostroot: Path, planted: dict[str, str], tmp_path: Path) -> None:
    # qx-update's status, as a command that (wrongly) echoes the token: command output is redacted too
    fake = tmp_path / "qx-update"
    fake.write_text(f"#!/bin/sh\necho '{{\"channel\": \"stable\", \"token\": \"{TOKEN}\"}}'\n")
    fake.chmod(0o755)
    res = make_bundle(hostroot, usb=False, qx_update=[str(fake)])
    assert res.path.parent == hostroot / hostpaths.SUPPORT_DIR.relative_to("/")
    assert res.path.name.startswith("qx-support-qx-test-") and res.path.name.endswith(".tar.zst")
    assert res.path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in res.path.parent.iterdir()] == [res.path.name]  # nothing half-written left
    got = members(res.path)
    everything = b"\n".join(got.values())
    for what, secret in planted.items():
        assert secret.encode() not in everything, f"{what} leaked"
    # what a support engineer needs is there
    assert b"product version: 1.2.3" in got["versions.txt"]
    assert b"root=PARTLABEL=root-a" in got["cmdline.txt"]
    assert json.loads(got["config/hostconfig.json"])["hostname"] == "qx-test"
    assert b"PUBLIC" in got["config/ssh/etc/ssh/ssh_host_ed25519_key.pub"]
    assert b"MIIBpublic" in got["node/tls/cert.pem"]
    assert b"<redacted>" in got["config/notes.txt"] and b"https://host" in got["config/notes.txt"]
    assert json.loads(got["update-status.json"]) == {"channel": "stable", "token": "<redacted>"}
    manifest = json.loads(got["manifest.json"])
    for left in ("node/api-token", "node/tls/key.pem", "config/ssh/etc/ssh/ssh_host_ed25519_key",
                 "config/update-checkin-token"):
        assert manifest["left_out"][left] == "holds a secret: not read"
        assert left not in got
    assert "hardware/meminfo.txt" in got and any(n.startswith("logs/") for n in got)


def test_redactor_patterns() -> None:
    r = Redactor(["exact-secret-value"])
    assert r.text("x exact-secret-value y") == "x <redacted> y"
    assert r.text('{"password": "a b", "name": "n"}') == '{"password": "<redacted>", "name": "n"}'
    assert r.text("Authorization: Bearer abc.def") == "Authorization: Bearer <redacted>"
    assert r.text("root:$y$j9T$abcdefgh$ijklmnopqrstuv:20000") == "root:<redacted>:20000"
    assert Redactor(["short"]).text("short words stay") == "short words stay"


def test_removable_detection_from_lsblk_and_sysfs(tmp_path: Path) -> None:
    sys_block = tmp_path / "sys/block"
    (sys_block / "sdc").mkdir(parents=True)
    (sys_block / "sdc/removable").write_text("1\n")
    lsblk = {"blockdevices": [
        {"name": "nvme0n1", "path": "/dev/nvme0n1", "rm": False, "hotplug": False, "tran": "nvme", "fstype": None,
         "children": [{"name": "nvme0n1p1", "path": "/dev/nvme0n1p1", "fstype": "vfat", "mountpoint": "/efi"}]},
        {"name": "sdb", "path": "/dev/sdb", "rm": True, "tran": "usb", "fstype": None,
         "children": [{"name": "sdb1", "path": "/dev/sdb1", "fstype": "vfat", "label": "STICK",
                       "mountpoint": "/media/stick"}]},
        {"name": "sdc", "path": "/dev/sdc", "rm": False, "hotplug": False, "tran": "sata", "fstype": "exfat",
         "mountpoint": None},
    ]}
    found = removable_devices(lsblk, sys_block)
    assert [(d.device, d.mountpoint) for d in found] == [("/dev/sdb1", "/media/stick"), ("/dev/sdc", "")]


@pytest.fixture
def mounted_loop(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if os.geteuid() != 0:
        pytest.fail("needs root for a loop device (run as root, or deselect with -m 'not root')")
    img = tmp_path / "stick.img"
    with img.open("wb") as f:
        f.truncate(32 << 20)
    dev = subprocess.run(["losetup", "-f", "--show", str(img)], check=True, capture_output=True,
                         text=True).stdout.strip()
    mnt = tmp_path / "stick"
    mnt.mkdir()
    try:
        subprocess.run(["mkfs.ext4", "-q", "-L", "STICK", dev], check=True, capture_output=True)
        subprocess.run(["mount", dev, str(mnt)], check=True, capture_output=True)
        try:
            yield dev, mnt
        finally:
            subprocess.run(["umount", str(mnt)], check=False)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


@pytest.mark.root
def test_bundle_is_copied_to_a_mounted_removable_device(hostroot: Path, mounted_loop: tuple[str, Path],
                                                         tmp_path: Path) -> None:
    dev, mnt = mounted_loop
    name = Path(dev).name
    # The kernel's sysfs says a loop device is not removable: as it is, no copy is made...
    res = make_bundle(hostroot, tmp_path / "out1", sys_block=Path("/sys/block"), qx_update=["/nonexistent"])
    assert (Path("/sys/block") / name / "removable").read_text().strip() == "0"
    assert all(c.parent != mnt for c in res.copies)
    # ...marked removable in a sysfs tree of the test's own (as a USB stick's is), it gets the copy
    sys_block = tmp_path / "sys/block"
    (sys_block / name).mkdir(parents=True)
    (sys_block / name / "removable").write_text("1\n")
    res = make_bundle(hostroot, tmp_path / "out2", sys_block=sys_block, qx_update=["/nonexistent"])
    assert res.copies == (mnt / res.path.name,)
    assert (mnt / res.path.name).read_bytes() == res.path.read_bytes()
    assert "Copied to" in res.summary()


@pytest.mark.anyio
async def test_support_bundle_from_the_console() -> None:
    from qx_console.app import ConsoleApp
    from qx_console.customize import SupportScreen
    from qx_console.memory import MemoryBackend

    from .helpers import bad_glyphs, on_screen, push, until
    from .test_app import login, open_item

    be = MemoryBackend()
    app = ConsoleApp(be, refresh_s=3600)
    async with app.run_test(size=(80, 24)) as pilot:
        await login(pilot, app)
        await open_item(pilot, app, "support")
        await until(pilot, lambda: isinstance(app.screen, SupportScreen))
        await push(pilot, "#create")
        await until(pilot, lambda: on_screen(app, "Support bundle written.") and on_screen(app, "qx-support-qx-demo"))
        assert be.calls.count("support_bundle") == 1 and not bad_glyphs(app)


def test_cli_writes_a_bundle_under_the_given_root(hostroot: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = subprocess.run([str(Path(sys.executable).parent / "qx-support-bundle"), "--root", str(hostroot),
                        "--out", str(out), "--no-usb"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    written = list(out.glob("qx-support-*.tar.zst"))
    assert len(written) == 1 and f"Support bundle: {written[0]}" in p.stdout
    bad = subprocess.run([str(Path(sys.executable).parent / "qx-support-bundle"), "--root",
                          str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--root" in bad.stderr and "hint:" in bad.stderr
