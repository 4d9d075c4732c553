"""The update trust anchor a build ships (qx_build.trust): real TUF root metadata, signed or not; the
development keys a default build makes once, and the local update server that serves updates signed with them."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root, Targets

from qx_build import trust
from qx_build.paths import REPO
from qx_common.errors import UserError


def _root(tmp_path: Path, *, sign: bool = True, name: str = "root.json") -> Path:
    signer = CryptoSigner.generate_ed25519()
    root = Root(expires=datetime.now(timezone.utc) + timedelta(days=365))
    root.add_key(signer.public_key, Root.type)
    md = Metadata(root)
    if sign:
        md.sign(signer)
    path = tmp_path / name
    md.to_file(str(path))
    return path


def test_a_self_signed_root_is_staged_whole(tmp_path: Path) -> None:
    root = _root(tmp_path)
    staged = tmp_path / "trust"
    trust.stage(root, staged)
    assert [p.name for p in staged.iterdir()] == [trust.STAGED_NAME]
    assert (staged / trust.STAGED_NAME).read_bytes() == root.read_bytes()


def test_no_root_leaves_an_empty_staging_dir_even_after_a_build_with_one(tmp_path: Path) -> None:
    staged = tmp_path / "trust"
    trust.stage(_root(tmp_path), staged)
    trust.stage(None, staged)
    assert staged.is_dir() and list(staged.iterdir()) == []


@pytest.mark.parametrize("case", ["missing", "not-json", "targets", "unsigned"])
def test_bad_roots_are_refused_naming_tuf_root_and_nothing_is_staged(tmp_path: Path, case: str) -> None:
    staged = tmp_path / "trust"
    trust.stage(_root(tmp_path), staged)  # an earlier good build
    before = (staged / trust.STAGED_NAME).read_bytes()
    bad = tmp_path / f"{case}.json"
    if case == "not-json":
        bad.write_text("{ not json")
    elif case == "targets":
        Metadata(Targets(expires=datetime.now(timezone.utc) + timedelta(days=1))).to_file(str(bad))
    elif case == "unsigned":
        bad = _root(tmp_path, sign=False, name="unsigned.json")
    with pytest.raises(UserError) as e:
        trust.stage(bad, staged)
    assert e.value.message.startswith("TUF_ROOT:")
    assert e.value.hint
    # Validation happens before the staging directory is touched.
    assert (staged / trust.STAGED_NAME).read_bytes() == before


# ---- development keys: what a default `make image` ships, and `make update-server` serves ----------

def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_dev_keys_are_made_once_and_reused(tmp_path: Path) -> None:
    keys = tmp_path / "build" / "keys"
    root = trust.ensure_dev_keys(keys)
    md = Metadata[Root].from_file(str(root))
    md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)  # self-signed: a client bootstraps from it
    assert md.signed.version == 1 and md.signed.consistent_snapshot
    assert (keys / "root-keys").is_dir() and (keys / "online-keys").is_dir() and (keys / trust.DEV_KEYS_NOTE).is_file()
    before = _tree(keys)
    assert trust.ensure_dev_keys(keys) == root
    assert _tree(keys) == before  # nothing regenerated: images built earlier still trust these keys


def test_a_default_build_stages_the_dev_root_and_records_it_tuf_root_overrides(tmp_path: Path, caplog) -> None:
    keys, staged = tmp_path / "keys", tmp_path / "trust"
    record = trust.stage(None, staged, dev_keys=keys)
    shipped = (staged / trust.STAGED_NAME).read_bytes()
    assert shipped == (keys / "root.json").read_bytes()
    assert record["keys"] == "development" and record["tuf_root_version"] == 1
    assert record["tuf_root_sha256"] == hashlib.sha256(shipped).hexdigest()
    # A development image looks for updates at make update-server on the build machine.
    assert (staged / trust.DEV_URL_NAME).read_text() == trust.DEV_UPDATE_URL == record["server_url"]
    given = _root(tmp_path)
    record = trust.stage(given, staged, dev_keys=tmp_path / "unused")
    assert (staged / trust.STAGED_NAME).read_bytes() == given.read_bytes() and record["keys"] == "given"
    assert sorted(p.name for p in staged.iterdir()) == [trust.STAGED_NAME]  # and the image's server_url stays
    assert not (tmp_path / "unused").exists()  # TUF_ROOT given: no development keys are made


def test_a_key_dir_without_root_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "something").write_text("not ours")
    with pytest.raises(UserError) as e:
        trust.ensure_dev_keys(keys)
    assert "no root.json" in e.value.message and e.value.hint


def test_update_server_on_the_dev_keys_serves_what_the_dev_image_trusts(tmp_path: Path) -> None:
    """`make update-server` (qx-update-server dev) on build/keys; a build published with the token file it
    writes; qx-update's repository client, holding the root the image ships, verifies and finds it."""
    from qx_update.repo import open_repo
    from tests.update_server.conftest import free_port, write_release

    build = tmp_path / "build"
    staged = tmp_path / "trust"
    trust.stage(None, staged, dev_keys=build / "keys")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "qx_update_server.cli", "dev", "--keys", str(build / "keys"),
                             "--data-dir", str(build / "update-server"), "--listen", f"127.0.0.1:{port}"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        out = log.read_text()
        assert "development keys" in out and "publish --channel stable build/" in out
        token_file = build / "update-server" / "dev-release-token"
        assert token_file.stat().st_mode & 0o077 == 0
        release = write_release(tmp_path / "builds", "0.9.0")
        subprocess.run([sys.executable, "-m", "qx_update_server.release_cli", "--server", url, "--token-file",
                        str(token_file), "publish", "--channel", "stable", str(release)],
                       check=True, cwd=REPO, capture_output=True, timeout=120)
        repo = open_repo(trusted_root=staged / trust.STAGED_NAME, metadata_dir=tmp_path / "host", base_url=url)
        repo.refresh()
        info = repo.targetinfo("0.9.0/quantix-os_0.9.0.root.erofs.zst")
        assert info.custom["quantix"]["channels"] == ["dev", "beta", "stable"]
    finally:
        proc.terminate()
        proc.wait(10)
    # The server got only the online keys: no root private key in its data directory.
    root_keyids = Metadata[Root].from_file(str(build / "keys" / "root.json")).signed.roles[Root.type].keyids
    pems = list((build / "update-server").rglob("*.pem"))
    assert pems and not {p.stem for p in pems} & set(root_keyids)
    assert not [p for p in (build / "update-server").rglob("*") if p.is_file()
                and any((build / "keys" / "root-keys" / f"{k}.pem").read_bytes() in p.read_bytes() for k in root_keyids)]


def test_qx_build_dev_keys_is_what_make_update_server_runs_first(tmp_path: Path) -> None:
    """`make update-server` runs `qx-build dev-keys` before the server: keys made once, root path printed."""
    def dev_keys() -> str:
        qx_build = Path(sys.executable).with_name("qx-build")  # the console script, as make runs it
        return subprocess.run([str(qx_build), "--build-dir", str(tmp_path), "dev-keys"],
                              check=True, capture_output=True, text=True, cwd=REPO).stdout.strip()

    assert dev_keys() == str(tmp_path / "keys" / "root.json")
    before = _tree(tmp_path / "keys")
    assert dev_keys() == str(tmp_path / "keys" / "root.json") and _tree(tmp_path / "keys") == before
    make = (REPO / "Makefile").read_text()
    assert "update-server: venv\n\t@$(QXB) dev-keys" in make  # from a clean checkout: the venv first
