"""Hostile uploads of a root signed offline (``POST /v1/keys/root``, ``qx-release keys sign-root``).

A real server on 127.0.0.1 set up from an offline directory (2 root keys, threshold 2). Each upload
here is one an attacker or a broken tool could send: every one is a 400 naming ``root`` with the
reason — never a 500 — and leaves the served metadata byte for byte as it was.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Key, Metadata, Root

from .conftest import ALL, ROOT, Server, free_port, start_server, verify_repo
from .test_offline_root import _signers, offline_init, server_init


def _setup(tmp_path: Path) -> tuple[Path, Server]:
    off = tmp_path / "admin usb"  # a space in the path, as on a labelled stick
    offline_init(off, "--root-keys", "2", "--threshold", "2")
    data = tmp_path / "data"
    server_init(data, off)
    return off, start_server(data)


def _snapshot(server: Server) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (server.data_dir / "repository" / "metadata").iterdir()}


def _post(server: Server, token: str, body: bytes) -> requests.Response:
    return requests.post(f"{server.url}/v1/keys/root", data=body, timeout=30,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})


def _v2(off: Path, signers: list[CryptoSigner], edit=lambda signed: None) -> Metadata[Root]:
    """Root version 2 from ``off``'s root 1, changed by ``edit``, signed by ``signers``."""
    md = Metadata[Root].from_file(str(off / "root.json"))
    md.signed.version = 2
    edit(md.signed)
    md.signatures.clear()
    for i, s in enumerate(signers):
        md.sign(s, append=i > 0)
    return md


def test_roots_canonical_json_cannot_hold_are_a_400_naming_root(tmp_path):
    off, server = _setup(tmp_path)
    try:
        token = server.token(*ALL)
        before = _snapshot(server)
        good = json.loads(_v2(off, list(_signers(off / "root-keys").values())).to_bytes())
        cases = {
            # An unknown field python-tuf keeps: canonical JSON has no floats, and no lone surrogates.
            "float": (lambda d: d["signed"].__setitem__("x-note", 1.5), "canonical JSON"),
            "surrogate": (lambda d: d["signed"].__setitem__("x-note", "\ud800"), "canonical JSON"),
            "bool version": (lambda d: d["signed"].__setitem__("version", True), "version is true"),
            "signature twice": (lambda d: d["signatures"].append(d["signatures"][0]), "Multiple signatures"),
        }
        for name, (edit, message) in cases.items():
            doc = copy.deepcopy(good)
            edit(doc)
            r = _post(server, token, json.dumps({"root": doc}).encode())
            assert r.status_code == 400, (name, r.status_code, r.text)
            assert r.json()["field"] == "root" and message in r.json()["error"], (name, r.text)
        assert _snapshot(server) == before
    finally:
        server.stop()


def test_one_key_under_two_keyids_does_not_meet_a_threshold_of_two(tmp_path):
    """Root 2 is properly signed by root 1's two keys, but lists one new key twice (threshold 2): one
    holder alone could then sign root 3 by copying their signature under the second keyid."""
    off, server = _setup(tmp_path)
    try:
        token = server.token(*ALL)
        before = _snapshot(server)
        lone = CryptoSigner.generate_ed25519()

        def twice(root: Root) -> None:
            for keyid in list(root.roles[Root.type].keyids):
                root.revoke_key(keyid, Root.type)
            root.add_key(lone.public_key, Root.type)
            alias = Key.from_dict("a" * 64, copy.deepcopy(lone.public_key.to_dict()))
            root.add_key(alias, Root.type)
            root.roles[Root.type].threshold = 2

        md = _v2(off, list(_signers(off / "root-keys").values()), twice)
        md.sign(lone, append=True)
        doc = json.loads(md.to_bytes())
        doc["signatures"].append({**next(s for s in doc["signatures"] if s["keyid"] == lone.public_key.keyid),
                                  "keyid": "a" * 64})
        r = _post(server, token, json.dumps({"root": doc}).encode())
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "root" and "same public key under two keyids" in r.json()["error"]
        assert _snapshot(server) == before
    finally:
        server.stop()


def test_sign_root_on_an_unsignable_root_file_is_a_user_error(tmp_path):
    off = tmp_path / "admin usb"
    offline_init(off)
    doc = json.loads((off / "1.root.json").read_bytes())
    doc["signed"]["x-note"] = 0.5  # edited by hand
    (off / "1.root.json").write_text(json.dumps(doc))
    before = sorted(p.name for p in off.iterdir())
    p = subprocess.run([sys.executable, "-m", "qx_update_server.release_cli", "keys", "sign-root", "--offline",
                        str(off)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "1.root.json" in p.stderr and "canonical JSON" in p.stderr and "Traceback" not in p.stderr
    assert sorted(p.name for p in off.iterdir()) == before


def test_a_root_key_under_any_file_name_stops_the_server_and_an_encrypted_one_is_named(tmp_path):
    off = tmp_path / "admin usb"
    offline_init(off)
    data = tmp_path / "data"
    server_init(data, off)
    root_pem = next((off / "root-keys").glob("*.pem"))
    (data / "keys" / "backup of root.key").write_bytes(root_pem.read_bytes())  # not called *.pem
    p = subprocess.run([sys.executable, "-m", "qx_update_server.cli", "serve", "--listen", f"127.0.0.1:{free_port()}",
                        "--data-dir", str(data)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 3 and "holds a root private key" in p.stderr and "backup of root.key" in p.stderr

    # An administrator who protected the offline key with a passphrase: named, not an internal error.
    from cryptography.hazmat.primitives.serialization import (BestAvailableEncryption, Encoding, PrivateFormat,
                                                              load_pem_private_key)
    key = load_pem_private_key(root_pem.read_bytes(), None)
    root_pem.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"pw")))
    before = sorted(x.name for x in off.iterdir())
    p = subprocess.run([sys.executable, "-m", "qx_update_server.release_cli", "keys", "sign-root", "--offline",
                        str(off)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 3 and root_pem.name in p.stderr and "not an unencrypted private key" in p.stderr
    assert sorted(x.name for x in off.iterdir()) == before


def test_a_root_that_makes_an_online_key_a_root_key_is_refused(tmp_path):
    """Properly signed root 2 that also lists the timestamp key as a root key: accepted, the server would
    hold a root private key (and refuse its next start). Refused, nothing changes, the server still starts."""
    off, server = _setup(tmp_path)
    try:
        token = server.token(*ALL)
        before = _snapshot(server)
        root1 = Metadata[Root].from_file(str(off / "root.json")).signed
        ts = root1.roles["timestamp"].keyids[0]

        def promote(root: Root) -> None:
            root.add_key(root1.keys[ts], Root.type)

        md = _v2(off, list(_signers(off / "root-keys").values()), promote)
        r = _post(server, token, json.dumps({"root": json.loads(md.to_bytes())}).encode())
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "root" and "both a root key and a timestamp key" in r.json()["error"]
        assert _snapshot(server) == before
    finally:
        server.stop()
    server = start_server(server.data_dir)  # a start after the refusal finds no root key
    server.stop()


def test_two_concurrent_pushes_of_root_2_accept_it_once(tmp_path):
    off, server = _setup(tmp_path)
    try:
        token = server.token(*ALL)
        body = json.dumps({"root": json.loads(_v2(off, list(_signers(off / "root-keys").values())).to_bytes())})
        barrier = threading.Barrier(4)
        answers: list[requests.Response] = []

        def push() -> None:
            barrier.wait()
            answers.append(_post(server, token, body.encode()))

        threads = [threading.Thread(target=push) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(r.status_code for r in answers) == [200, 400, 400, 400], [r.text for r in answers]
        assert all("is root version 2, the current root is version 2" in r.json()["error"]
                   for r in answers if r.status_code == 400)
        assert len(verify_repo(server.url, (off / "1.root.json").read_bytes(), tmp_path)) == 0
        served = requests.get(f"{server.url}/metadata/root.json", timeout=5).json()
        assert served["signed"]["version"] == 2
    finally:
        server.stop()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="mounts a tmpfs: needs root and unshare")
def test_init_on_the_mount_point_of_the_offline_medium_is_refused_before_any_key_is_made(tmp_path):
    """The stick's mount point as DIR: init builds DIR's contents beside it — on the parent filesystem,
    the machine's own disk — so it is refused up front, naming a directory inside it."""
    stick = tmp_path / "stick"
    stick.mkdir()
    script = ('mount -t tmpfs none "$1" && "$2" -m qx_update_server.release_cli keys init --offline "$1"; rc=$?; '
              'ls -A "$1"; exit $rc')
    p = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(stick),
                        sys.executable], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "is a mount point" in p.stderr and f"--offline {stick / 'quantix-keys'}" in p.stderr
    assert p.stdout == ""  # nothing on the stick
    assert sorted(x.name for x in tmp_path.iterdir()) == ["stick"]  # and nothing beside it


def test_init_removes_what_an_init_killed_before_its_rename_left(tmp_path):
    """A killed init leaves ``.DIR.init-<pid>`` with root private keys no root names; the next init of the
    same DIR removes it (its process is gone), and leaves one whose process still runs."""
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer runs
    off = tmp_path / "admin usb"
    stale = tmp_path / f".admin usb.init-{dead.pid}"
    (stale / "root-keys").mkdir(parents=True)
    (stale / "root-keys" / "k.pem").write_bytes(CryptoSigner.generate_ed25519().private_bytes)
    running = tmp_path / f".admin usb.init-{os.getpid()}"  # this test process: alive
    running.mkdir()
    offline_init(off)
    assert not stale.exists() and running.exists()
    assert (off / "root.json").is_file()


def test_expired_replayed_or_jumping_roots_properly_signed_are_refused(tmp_path):
    off, server = _setup(tmp_path)
    try:
        token = server.token(*ALL)
        before = _snapshot(server)
        keys = list(_signers(off / "root-keys").values())

        def expire(root: Root) -> None:
            root.expires = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)

        def jump(root: Root) -> None:
            root.version = 7

        cases = {
            "expired": (_v2(off, keys, expire), "expired at 2020-01-01"),
            "replayed 1": (Metadata[Root].from_file(str(off / "1.root.json")), "is root version 1"),
            "jumps to 7": (_v2(off, keys, jump), "is root version 7, the current root is version 1"),
        }
        for name, (md, message) in cases.items():
            r = _post(server, token, json.dumps({"root": json.loads(md.to_bytes())}).encode())
            assert r.status_code == 400 and message in r.json()["error"], (name, r.text)
            assert r.json()["hint"], name
        r = _post(server, server.token("publish", "read"), json.dumps({"root": {}}).encode())
        assert r.status_code == 403, r.text
        assert _snapshot(server) == before
    finally:
        server.stop()
