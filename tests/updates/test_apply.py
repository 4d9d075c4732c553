"""qx-update end to end against a real TUF repository on 127.0.0.1: check, apply, status, boot flow."""

from __future__ import annotations

import hashlib
import json

from tests.updates.conftest import Host, payload, sha
from tests.updates.tufrepo import TufRepo


def test_apply_installs_newest_release_into_inactive_slot(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(1), channels=["dev", "beta", "stable"])
    rel = repo.add_release("1.2.0", slot_bytes=payload(2), channels=["dev", "beta", "stable"], security_epoch=1)
    before_a = sha(host.slots["a"])
    chk = host.json("check")
    assert chk["available"]["version"] == "1.2.0" and chk["running_version"] == "1.0.0"
    out = host.run("--json", "apply").stdout.strip().splitlines()
    events = [json.loads(line) for line in out[:-1]]
    phases = {e["phase"] for e in events}
    assert {"downloading root", "writing slot", "verifying slot"} <= phases
    assert all(0 <= e["percent"] <= 100 and e["done"] <= e["total"] for e in events)
    res = json.loads(out[-1])
    assert res["applied"]["version"] == "1.2.0" and res["slot"] == "b" and res["next_boot"] == "b"
    assert res["entry"] == "quantix-b+3.conf"
    assert sha(host.slots["a"]) == before_a
    written = host.slots["b"].read_bytes()[: len(rel.slot_bytes)]
    assert hashlib.sha256(written).hexdigest() == hashlib.sha256(rel.slot_bytes).hexdigest()
    entry = (host.esp / "loader/entries/quantix-b+3.conf").read_text()
    assert "version 1.2.0" in entry and "root=PARTLABEL=root-b" in entry
    assert "efi /EFI/quantix/quantix-os_1.2.0.efi" in entry
    assert (host.esp / "EFI/quantix/quantix-os_1.2.0.efi").read_bytes() == rel.uki_file.read_bytes()
    st = host.json("status")
    assert st["slots"]["b"]["tries_left"] == 3 and st["slots"]["b"]["next_boot"] and not st["slots"]["b"]["blessed"]
    assert st["slots"]["a"]["active"] and st["slots"]["a"]["blessed"]
    assert "reboot to start it" in st["message"]
    # A second apply does not rewrite the slot: the release is already waiting for the reboot.
    again = host.json("apply")
    assert again["applied"] is None and "already installed" in again["message"]


def test_up_to_date_and_text_output(host: Host, repo: TufRepo) -> None:
    out = host.run("check").stdout
    assert "up to date" in out
    st = host.run("status").stdout
    assert "slot A: 1.0.0" in st and "blessed" in st and "last check:" in st


def test_offline_apply_from_directory_and_tarball(host: Host, repo: TufRepo, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import tarfile

    repo.add_release("1.1.0", slot_bytes=payload(3), channels=["stable"])
    host.write_config(server_url="http://127.0.0.1:9/")     # no server: offline only
    tarball = tmp_path / "usb.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(repo.base, arcname="quantix-repo")
    res = host.json("apply", "--from", str(tarball))
    assert res["applied"]["version"] == "1.1.0"
    # Same repository as a directory: verified the same way, nothing newer.
    copy = tmp_path / "usb"
    shutil.copytree(repo.base, copy)
    chk = host.json("check", "--from", str(copy))
    assert chk["available"]["version"] == "1.1.0" and chk["installed"] is True


def test_channel_set_writes_override_and_is_validated(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(4), channels=["dev"])
    assert host.json("check")["available"] is None
    assert host.json("channel", "set", "dev")["channel"] == "dev"
    assert 'channel = "dev"' in (host.dir / "override.toml").read_text()
    assert host.json("check")["available"]["version"] == "1.1.0"
    bad = host.run("channel", "set", "nightly", check=False)
    assert bad.returncode == 2 and "nightly" in bad.stderr
    (host.dir / "override.toml").write_text('state_dir = "/tmp/x"\n')
    err = host.run("status", check=False)
    assert err.returncode == 2 and "'state_dir' cannot be set in the host override file" in err.stderr


def test_no_trusted_root_is_a_clear_state(host: Host) -> None:
    (host.dir / "root.json").unlink()
    st = host.json("status")
    assert st["message"].startswith("no trusted root: this image was built without an update key")
    r = host.run("check", check=False)
    assert r.returncode == 3 and "no trusted root" in r.stderr and "Traceback" not in r.stderr


def test_root_rotation_is_followed(host: Host, repo: TufRepo) -> None:
    host.json("check")
    repo.rotate_root()
    repo.add_release("1.1.0", slot_bytes=payload(5), channels=["stable"])
    assert host.json("check")["available"]["version"] == "1.1.0"
    assert (host.state_dir / "metadata/root_history/2.root.json").exists()


def test_shipped_default_config_loads() -> None:
    from pathlib import Path

    from qx_update import config

    shipped = Path(__file__).resolve().parents[2] / "image/extra/usr/lib/quantix/update.toml"
    cfg = config.load(shipped)
    assert cfg.channel == "stable" and cfg.esp == "auto" and cfg.slots["b"].name == "root-b"
    assert cfg.health_url.startswith("https://127.0.0.1:8443/")
    # The Secure Boot paths are spelled out there, and are the defaults (qx_common.hostpaths).
    assert (cfg.efivars_dir, cfg.secure_boot_cert) == (config.Config().efivars_dir, config.Config().secure_boot_cert)
    assert "secure_boot_cert" in shipped.read_text()


def test_one_writer_at_a_time(host: Host, repo: TufRepo) -> None:
    import fcntl
    import os

    repo.add_release("1.1.0", slot_bytes=payload(6), channels=["stable"])
    host.state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(host.state_dir / "lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        proc = host.run("apply", check=False)
        assert proc.returncode == 3 and "another qx-update" in proc.stderr
        assert host.json("status")["slots"]["b"]["version"] is None   # status reads without the lock
    finally:
        os.close(fd)
    assert host.json("apply")["applied"]["version"] == "1.1.0"
