"""Offline TUF root keys: the documented setup (docs/update-format.md §2.3) through the real CLIs.

``qx-release keys init --offline`` on "the administrator's machine" (a directory of this test),
``qx-update-server init`` with only the root metadata and the online keys, a real server on 127.0.0.1,
python-tuf's ngclient as the host. Proven here: no root private key is anywhere in the server's data
directory (every file scanned for key material); a root rotation signed offline and pushed is followed
by a client that holds only the old root; a rotation signed by too few or the wrong keys, or out of
sequence, is refused with the reason and changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, NoEncryption, load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root

from qx_update.repo import Repo, open_repo

from .conftest import ALL, ROOT, Server, free_port, qx_release, start_server, verify_repo


def _cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}): {p.stdout}{p.stderr}")
    return p


def offline_init(d: Path, *extra: str) -> dict:
    return json.loads(_cli("qx_update_server.release_cli", "--json", "keys", "init", "--offline", str(d),
                           *extra).stdout)


def server_init(data: Path, off: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _cli("qx_update_server.cli", "init", "--data-dir", str(data), "--root", str(off / "root.json"),
                "--online-keys", str(off / "online-keys"), check=check)


def _signers(keydir: Path) -> dict[str, CryptoSigner]:
    return {p.stem: CryptoSigner(load_pem_private_key(p.read_bytes(), None)) for p in keydir.glob("*.pem")}


def _secret_forms(signer: CryptoSigner) -> list[bytes]:
    """The ways a private key's bytes could sit in a file: PEM (as written), PKCS8 DER, the raw 32 bytes."""
    key = signer._private_key  # noqa: SLF001 - securesystemslib exposes no other way to the key object
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return [key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
            key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption()), raw, raw.hex().encode()]


def _key_material(data_dir: Path, signers: dict[str, CryptoSigner]) -> list[str]:
    """Every file under ``data_dir`` holding one of ``signers``' private keys, in any form, or a PEM
    private key block whose key is one of them (found by content, whatever the file is called)."""
    forms = {kid: _secret_forms(s) for kid, s in signers.items()}
    hits = []
    for f in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        data = f.read_bytes()
        for kid, fs in forms.items():
            if any(x in data for x in fs):
                hits.append(f"{f}: {kid}")
        for block in re.findall(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", data, re.S):
            try:
                kid = CryptoSigner(load_pem_private_key(block, None)).public_key.keyid
            except Exception:  # noqa: BLE001 - a TLS key (not ed25519) or garbage: not a TUF key
                continue
            if kid in signers:
                hits.append(f"{f}: PEM of {kid}")
    return hits


def offline_server(tmp_path: Path, *extra: str) -> tuple[Path, Server]:
    off = tmp_path / "admin-usb"
    offline_init(off, "--root-keys", "3", "--threshold", "2", *extra)
    data = tmp_path / "data"
    server_init(data, off)
    return off, start_server(data)


def test_documented_setup_leaves_no_root_private_key_on_the_server(tmp_path, make_release):
    off, server = offline_server(tmp_path)
    try:
        token = server.token(*ALL)
        qx_release(server, token, "publish", str(make_release("0.2.0")))
        root_v1 = (off / "1.root.json").read_bytes()
        assert len(verify_repo(server.url, root_v1, tmp_path)) == 2
        status = json.loads(qx_release(server, token, "--json", "keys", "status").stdout)
        assert status["root_keys"] == "offline" and status["roles"]["root"]["keys_present"] == 0
        assert status["roles"]["root"]["threshold"] == 2
    finally:
        server.stop()
    root_keys = _signers(off / "root-keys")
    online = _signers(off / "online-keys")
    assert len(root_keys) == 3 and len(online) == 3
    assert _key_material(server.data_dir, root_keys) == []
    # The scan does find key material where it is: the online keys, which the server signs with.
    assert {h.rsplit(" ", 1)[1] for h in _key_material(server.data_dir, online)} == set(online)


def test_the_server_refuses_root_keys_at_init_and_at_start(tmp_path):
    off = tmp_path / "admin-usb"
    offline_init(off)
    bad = tmp_path / "bad-online"
    shutil.copytree(off / "online-keys", bad)
    root_pem = next((off / "root-keys").glob("*.pem"))
    shutil.copy(root_pem, bad / "extra.pem")
    data = tmp_path / "data"
    p = _cli("qx_update_server.cli", "init", "--data-dir", str(data), "--root", str(off / "root.json"),
             "--online-keys", str(bad), check=False)
    assert p.returncode == 2 and "is a root private key" in p.stderr and "hint:" in p.stderr
    assert not (data / "repository" / "metadata" / "timestamp.json").exists()

    server_init(data, off)
    again = server_init(data, off, check=False)
    assert again.returncode == 2 and "already set up" in again.stderr
    shutil.copy(root_pem, data / "keys" / "copied-by-mistake.pem")  # under any name
    p = _cli("qx_update_server.cli", "serve", "--listen", f"127.0.0.1:{free_port()}", "--data-dir", str(data), check=False)
    assert p.returncode == 3 and "holds a root private key" in p.stderr and "copied-by-mistake.pem" in p.stderr


def test_an_offline_rotation_is_followed_by_a_client_holding_the_old_root(tmp_path, make_release):
    off, server = offline_server(tmp_path)
    try:
        token = server.token(*ALL)
        qx_release(server, token, "publish", str(make_release("0.2.0")))
        root_v1 = (off / "1.root.json").read_bytes()
        # A host whose image shipped root 1: qx-update's own repository client, its metadata cache kept
        # between runs as on a host.
        shipped = tmp_path / "tuf-root.json"
        shipped.write_bytes(root_v1)
        host = tmp_path / "host-metadata"

        def refresh() -> Repo:
            repo = open_repo(trusted_root=shipped, metadata_dir=host, base_url=server.url)
            repo.refresh()
            return repo

        assert "0.2.0/quantix-os_0.2.0.efi" in refresh().targets()
        old_keys = set(json.loads(root_v1)["signed"]["roles"]["root"]["keyids"])

        out = json.loads(_cli("qx_update_server.release_cli", "--json", "keys", "sign-root", "--offline", str(off),
                              "--new-root-keys", "2", "--threshold", "2").stdout)
        assert out["root_version"] == 2 and not set(out["root_keyids"]) & old_keys
        p = qx_release(server, token, "keys", "push-root", "--offline", str(off))
        assert "root " in p.stdout and "v2" in p.stdout
        qx_release(server, token, "publish", str(make_release("0.3.0")))

        repo = refresh()
        trusted = Metadata[Root].from_file(str(host / "root.json")).signed
        assert trusted.version == 2 and set(trusted.roles["root"].keyids) == set(out["root_keyids"])
        assert repo.targetinfo("0.3.0/quantix-os_0.3.0.efi").length > 0
        assert len(verify_repo(server.url, root_v1, tmp_path)) == 4  # a new host from the image's root too

        # Old root keys can no longer sign anything a client accepts: root 3 signed by them alone is refused.
        md = Metadata[Root].from_file(str(off / "2.root.json"))
        md.signed.version = 3
        md.signatures.clear()
        for i, s in enumerate(s for k, s in _signers(off / "root-keys").items() if k in old_keys):
            md.sign(s, append=i > 0)
        forged = tmp_path / "forged"
        shutil.copytree(off, forged)
        md.to_file(str(forged / "3.root.json"))
        p = qx_release(server, token, "keys", "push-root", "--offline", str(forged), check=False)
        assert p.returncode == 2 and "not signed by a threshold of the current root's root keys" in p.stderr
        assert requests.get(f"{server.url}/metadata/3.root.json", timeout=5).status_code == 404
    finally:
        server.stop()


def _under_signed(off: Path, dest: Path, keys: list[CryptoSigner], version: int = 2) -> Path:
    """A copy of ``off`` whose newest root is ``version``, signed only by ``keys``."""
    shutil.copytree(off, dest)
    md = Metadata[Root].from_file(str(off / "root.json"))
    md.signed.version = version
    md.signatures.clear()
    for i, s in enumerate(keys):
        md.sign(s, append=i > 0)
    md.to_file(str(dest / f"{version}.root.json"))
    return dest


def test_wrong_or_under_threshold_rotations_are_refused_and_change_nothing(tmp_path, make_release):
    off, server = offline_server(tmp_path)
    try:
        token = server.token(*ALL)
        qx_release(server, token, "publish", str(make_release("0.2.0")))
        before = {p.name: p.read_bytes() for p in (server.data_dir / "repository" / "metadata").iterdir()}
        keys = list(_signers(off / "root-keys").values())
        strangers = [CryptoSigner.generate_ed25519() for _ in range(3)]
        cases = {
            "one of three, threshold two": (_under_signed(off, tmp_path / "c1", keys[:1]),
                                            "not signed by a threshold of the current root's root keys"),
            "strangers' keys": (_under_signed(off, tmp_path / "c2", strangers),
                                "not signed by a threshold of the current root's root keys"),
            "skips a version": (_under_signed(off, tmp_path / "c3", keys, version=3),
                                "is root version 3, the current root is version 1"),
        }
        for name, (d, message) in cases.items():
            p = qx_release(server, token, "keys", "push-root", "--offline", str(d), check=False)
            assert p.returncode == 2, name
            assert message in p.stderr and "hint:" in p.stderr, (name, p.stderr)
        # A token without the keys scope never gets that far.
        p = qx_release(server, server.token("publish", "read"), "keys", "push-root", "--offline", str(off),
                       check=False)
        assert p.returncode == 2 and "'keys' scope" in p.stderr
        after = {p.name: p.read_bytes() for p in (server.data_dir / "repository" / "metadata").iterdir()}
        assert after == before
        assert len(verify_repo(server.url, (off / "1.root.json").read_bytes(), tmp_path)) == 2
    finally:
        server.stop()


def test_sign_root_without_the_threshold_writes_nothing(tmp_path):
    off = tmp_path / "admin-usb"
    offline_init(off, "--root-keys", "3", "--threshold", "2")
    pems = sorted((off / "root-keys").glob("*.pem"))
    for p in pems[1:]:
        p.rename(tmp_path / p.name)  # the other key holders are elsewhere
    before = sorted(os.listdir(off))
    p = _cli("qx_update_server.release_cli", "keys", "sign-root", "--offline", str(off), check=False)
    assert p.returncode == 2 and "needs 2 of its root keys" in p.stderr and "1 found" in p.stderr
    assert sorted(os.listdir(off)) == before
    for p in pems[1:]:
        (tmp_path / p.name).rename(off / "root-keys" / p.name)
    _cli("qx_update_server.release_cli", "keys", "sign-root", "--offline", str(off))
    assert Metadata[Root].from_file(str(off / "root.json")).signed.version == 2


def test_offline_init_never_overwrites_keys(tmp_path):
    off = tmp_path / "admin-usb"
    first = offline_init(off)
    p = _cli("qx_update_server.release_cli", "keys", "init", "--offline", str(off), check=False)
    assert p.returncode == 2 and "already exists" in p.stderr
    assert json.loads((off / "root.json").read_bytes())["signed"]["roles"]["root"]["keyids"] == first["root_keyids"]
    assert [p.name for p in tmp_path.iterdir()] == ["admin-usb"]  # no temporary directory left behind
    p = _cli("qx_update_server.release_cli", "keys", "init", "--offline", str(tmp_path / "x"), "--threshold", "2",
             check=False)
    assert p.returncode == 2 and "--threshold: 2" in p.stderr


def test_new_online_keys_signed_offline_replace_the_old_ones(tmp_path, make_release):
    """A leaked online key: sign-root --new-online-keys, keys add-online on the server, push-root. The
    server refuses the root until it holds the new keys; afterwards it signs with them alone and the
    old key files are gone; a host holding root 1 follows."""
    off, server = offline_server(tmp_path)
    try:
        token = server.token(*ALL)
        qx_release(server, token, "publish", str(make_release("0.2.0")))
        old_online = set(_signers(off / "online-keys"))
        out = json.loads(_cli("qx_update_server.release_cli", "--json", "keys", "sign-root", "--offline", str(off),
                              "--new-online-keys").stdout)
        assert "keys add-online" in out["next"]
        new_root = Metadata[Root].from_file(str(off / "root.json")).signed
        new_online = {k for r in ("timestamp", "snapshot", "targets") for k in new_root.roles[r].keyids}
        assert not new_online & old_online and len(new_online) == 3

        p = qx_release(server, token, "keys", "push-root", "--offline", str(off), check=False)
        assert p.returncode == 2 and "keys this server does not hold" in p.stderr
        assert requests.get(f"{server.url}/metadata/2.root.json", timeout=5).status_code == 404

        # A root key slipped into the directory handed to the server is refused there too.
        leaky = tmp_path / "leaky"
        shutil.copytree(off / "online-keys", leaky)
        shutil.copy(next((off / "root-keys").glob("*.pem")), leaky / "oops.pem")
        p = _cli("qx_update_server.cli", "keys", "add-online", "--data-dir", str(server.data_dir),
                 "--root", str(off / "root.json"), "--online-keys", str(leaky), check=False)
        assert p.returncode == 2 and "is a root private key" in p.stderr

        _cli("qx_update_server.cli", "keys", "add-online", "--data-dir", str(server.data_dir),
             "--root", str(off / "root.json"), "--online-keys", str(off / "online-keys"))
        qx_release(server, token, "keys", "push-root", "--offline", str(off))
        held = {p.stem for p in (server.data_dir / "keys" / "online").glob("*.pem")}
        assert held == new_online  # the replaced keys are deleted
        ts = requests.get(f"{server.url}/metadata/timestamp.json", timeout=5).json()
        assert {s["keyid"] for s in ts["signatures"]} <= new_online
        qx_release(server, token, "publish", str(make_release("0.3.0")))
        assert len(verify_repo(server.url, (off / "1.root.json").read_bytes(), tmp_path)) == 4
    finally:
        server.stop()
    assert _key_material(server.data_dir, _signers(off / "root-keys")) == []


def test_root_keys_held_by_different_people_cosign_a_rotation(tmp_path, make_release):
    """Three root keys, threshold two, each on its holder's own offline media: holder A signs a draft
    (--partial), holder B cosigns it; only then is it root version 2, and the server serves it."""
    off, server = offline_server(tmp_path)
    try:
        token = server.token(*ALL)
        holders = []
        for i, pem in enumerate(sorted((off / "root-keys").glob("*.pem"))):
            d = tmp_path / f"holder-{i}"
            shutil.copytree(off, d, ignore=shutil.ignore_patterns("root-keys"))
            (d / "root-keys").mkdir(mode=0o700)
            shutil.copy(pem, d / "root-keys" / pem.name)
            holders.append(d)
        a, b, _ = holders
        p = _cli("qx_update_server.release_cli", "keys", "sign-root", "--offline", str(a), check=False)
        assert p.returncode == 2 and "--partial" in p.stderr  # alone, A cannot make root 2
        out = json.loads(_cli("qx_update_server.release_cli", "--json", "keys", "sign-root", "--offline", str(a),
                              "--partial").stdout)
        assert out["missing"] == {"current": 1, "new": 1} and "--cosign next.root.json" in out["next"]
        assert not (a / "2.root.json").exists()
        # A draft is not a root: pushing A's directory still pushes nothing new (root 1 is its newest).
        p = qx_release(server, token, "keys", "push-root", "--offline", str(a), check=False)
        assert p.returncode == 2 and "is root version 1, the current root is version 1" in p.stderr
        # A stranger's key adds nothing.
        stranger = tmp_path / "stranger"
        shutil.copytree(a, stranger, ignore=shutil.ignore_patterns("root-keys", "next.root.json"))
        (stranger / "root-keys").mkdir()
        p = _cli("qx_update_server.release_cli", "keys", "sign-root", "--offline", str(stranger),
                 "--cosign", str(a / "next.root.json"), check=False)
        assert p.returncode == 2 and "holds none of the root keys" in p.stderr

        draft = b / "from-a.json"
        shutil.copy(a / "next.root.json", draft)
        out = json.loads(_cli("qx_update_server.release_cli", "--json", "keys", "sign-root", "--offline", str(b),
                              "--cosign", str(draft)).stdout)
        assert out["root_version"] == 2 and "missing" not in out and (b / "2.root.json").exists()
        assert not draft.exists()
        qx_release(server, token, "keys", "push-root", "--offline", str(b))
        host = tmp_path / "host-md"
        shipped = tmp_path / "tuf-root.json"
        shipped.write_bytes((off / "1.root.json").read_bytes())
        open_repo(trusted_root=shipped, metadata_dir=host, base_url=server.url).refresh()
        assert Metadata[Root].from_file(str(host / "root.json")).signed.version == 2
    finally:
        server.stop()


def test_the_development_path_says_what_it_is(tmp_path):
    """keys init through the API (the server makes its own root keys) still works, and every place that
    shows keys says it is a development setup; an offline setup says nothing of the kind."""
    server = start_server(tmp_path / "dev-data")
    try:
        token = server.token(*ALL)
        out = qx_release(server, token, "keys", "init").stdout
        assert "NOTE: root keys: on this server (development)" in out
    finally:
        server.stop()
    again = start_server(tmp_path / "dev-data")  # the root keys in its data dir: started, with a warning
    again.stop()
    assert "WARNING: development setup" in again.log.read_text()

    off, offline = offline_server(tmp_path / "prod")
    try:
        out = qx_release(offline, offline.token("read"), "keys", "status").stdout
        assert "root" in out and "NOTE" not in out
    finally:
        offline.stop()
    assert "WARNING" not in offline.log.read_text()


@pytest.mark.parametrize("step", ["targets", "snapshot", "timestamp", "root"])
def test_kill_9_during_push_root_leaves_a_repository_that_verifies_and_converges(tmp_path, make_release,
                                                                                step, static_server):
    """The server is killed at each step of accepting a root; the directory as the crash left it verifies
    for a host holding root 1 (plain web server, no repair), and after a restart the rotation completes
    (by a retried push-root, or by repair when root 2 was already written)."""
    off, server = offline_server(tmp_path)
    try:
        token = server.token(*ALL)
        qx_release(server, token, "publish", str(make_release("0.2.0")))
    finally:
        server.stop()
    _cli("qx_update_server.release_cli", "keys", "sign-root", "--offline", str(off), "--new-root-keys", "2",
         "--threshold", "1", "--new-online-keys")
    _cli("qx_update_server.cli", "keys", "add-online", "--data-dir", str(server.data_dir), "--root",
         str(off / "root.json"), "--online-keys", str(off / "online-keys"))
    root_v1 = (off / "1.root.json").read_bytes()
    crashing = start_server(server.data_dir, env={"QX_SERVER_TEST_CRASH_AT": step})
    try:
        p = qx_release(crashing, token, "keys", "push-root", "--offline", str(off), check=False)
        assert p.returncode != 0
        assert crashing.proc.wait(30) == -9, crashing.log.read_text()[-2000:]
    finally:
        crashing.stop()
    assert len(verify_repo(static_server(server.data_dir / "repository"), root_v1, tmp_path)) == 2
    again = start_server(server.data_dir)
    try:
        p = qx_release(again, token, "keys", "push-root", "--offline", str(off), check=False)
        written = (server.data_dir / "repository" / "metadata" / "2.root.json").exists()
        assert p.returncode == 0 or "is root version 2, the current root is version 2" in p.stderr, p.stderr
        assert written
        assert len(verify_repo(again.url, root_v1, tmp_path)) == 2
        served = requests.get(f"{again.url}/metadata/root.json", timeout=5).json()
        assert served["signed"]["version"] == 2
        ts = requests.get(f"{again.url}/metadata/timestamp.json", timeout=5).json()
        new = Metadata[Root].from_file(str(off / "root.json")).signed
        assert {s["keyid"] for s in ts["signatures"]} <= set(new.roles["timestamp"].keyids)
    finally:
        again.stop()
