"""The whole OTA path with real parts on 127.0.0.1: qx-release → qx-update-server → qx-update.

A release built like ``make image`` builds it is published with the ``qx-release`` CLI to the real
server; the real OTA client (``python -m qx_update``, a subprocess) on a host made of files — an ESP
directory, slot images as plain files — finds it with ``check``, writes it with ``apply`` into the
inactive slot, and no longer offers it once it is yanked.
"""

from __future__ import annotations

import hashlib
import json

import requests

from tests.updates.conftest import make_host

from .conftest import ALL, qx_release, verify_repo


def test_published_release_is_applied_by_qx_update_and_yank_withdraws_it(server, tmp_path, make_release):
    token = server.token(*ALL)
    qx_release(server, token, "keys", "init")
    build = make_release("1.1.0", size=64 * 1024)
    qx_release(server, token, "publish", "--channel", "stable", str(build))
    root_v1 = requests.get(server.url + "/metadata/1.root.json", timeout=5).content

    host = make_host(tmp_path / "host", root_v1, server.url + "/")
    chk = host.json("check")
    assert chk["running_version"] == "1.0.0" and chk["available"]["version"] == "1.1.0"

    res = host.json("apply")
    assert res["applied"]["version"] == "1.1.0" and res["slot"] == "b"
    manifest = json.loads((build / "quantix-os_1.1.0.manifest.json").read_text())
    root = manifest["artifacts"]["root"]
    written = host.slots["b"].read_bytes()[: root["uncompressed_size"]]
    assert hashlib.sha256(written).hexdigest() == root["uncompressed_sha256"]
    assert (host.esp / "EFI/quantix/quantix-os_1.1.0.efi").read_bytes() == \
        (build / "quantix-os_1.1.0.efi").read_bytes()
    assert "version 1.1.0" in (host.esp / "loader/entries" / res["entry"]).read_text()

    # A second release, yanked after publishing: hosts that have not installed it stop seeing it.
    qx_release(server, token, "publish", "--channel", "stable", str(make_release("1.2.0", size=64 * 1024)))
    fresh = make_host(tmp_path / "host2", root_v1, server.url + "/")
    assert fresh.json("check")["available"]["version"] == "1.2.0"
    qx_release(server, token, "yank", "1.2.0")
    assert verify_repo(server.url, root_v1, tmp_path)["1.2.0/quantix-os_1.2.0.efi"]["yanked"] is True
    assert fresh.json("check")["available"]["version"] == "1.1.0"


def test_host_checks_in_after_check_apply_and_gate_and_a_failed_checkin_never_fails_an_update(
        server, tmp_path, make_release):
    token = server.token(*ALL)
    qx_release(server, token, "keys", "init")
    qx_release(server, token, "publish", "--channel", "stable", str(make_release("1.1.0", size=64 * 1024)))
    root_v1 = requests.get(server.url + "/metadata/1.root.json", timeout=5).content
    host = make_host(tmp_path / "host", root_v1, server.url + "/")
    reader = {"Authorization": f"Bearer {server.token('read')}"}

    def fleet() -> dict:
        hosts = requests.get(server.url + "/v1/fleet", headers=reader, timeout=5).json()["hosts"]
        return {h["host_id"]: h for h in hosts}

    # No token configured: nothing is sent, and the manual command says what to do.
    host.json("check")
    assert fleet() == {} and host.json("status")["last_checkin"] is None
    manual = host.run("checkin", check=False)
    assert manual.returncode == 2 and "update-checkin-token" in manual.stderr and "hint:" in manual.stderr

    # A token with only the checkin scope, in the configured file.
    (host.dir / "checkin-token").write_text(server.token("checkin") + "\n")
    host.write_config(checkin_token_file=str(host.dir / "checkin-token"))
    host.json("check")
    seen = fleet()["0123456789abcdef0123456789abcdef"]
    assert (seen["version"], seen["slot"], seen["channel"], seen["health"]) == ("1.0.0", "a", "stable", "unknown")
    # The host sent its own key (made once, kept 0600 in its state directory): the server bound it.
    key_file = host.state_dir / "host-key"
    assert seen["identity"] == "key" and key_file.stat().st_mode & 0o777 == 0o600
    # Another host's check-in with this host's id and a different key is refused, and this one's is not.
    impostor = requests.post(server.url + "/v1/checkin", timeout=5, json={
        "host_id": "0123456789abcdef0123456789abcdef", "version": "9.9.9", "slot": "a", "channel": "stable",
        "health": "good", "last_error": None},
        headers={"Authorization": f"Bearer {server.token('checkin')}", "X-Quantix-Host-Key": "x" * 43})
    assert impostor.status_code in (403, 409), impostor.text
    assert fleet()["0123456789abcdef0123456789abcdef"]["version"] == "1.0.0"

    assert host.json("apply")["applied"]["version"] == "1.1.0"
    assert host.json("status")["last_checkin"]["event"] == "apply"
    # The gate (no qx-node answers here, so it fails) reports the host bad; it still runs 1.0.0 until
    # it reboots.
    host.run("gate", "--no-reboot", check=False)
    seen = fleet()["0123456789abcdef0123456789abcdef"]
    assert seen["health"] == "bad" and seen["version"] == "1.0.0"

    # A revoked/wrong token: the check still succeeds; the failure is recorded, not raised.
    (host.dir / "checkin-token").write_text("not-a-token\n")
    assert host.json("check")["installed"] is True
    st = host.json("status")
    assert st["last_checkin"]["ok"] is False and "401" in st["last_checkin"]["detail"]
    manual = host.run("checkin", check=False)
    assert manual.returncode == 4 and "401" in manual.stderr
