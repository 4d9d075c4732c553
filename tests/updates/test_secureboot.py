"""qx-update refuses a release whose UKI the host's firmware would not boot (Secure Boot on), and says why.

Real parts only: a real PE (systemd's EFI addon stub, from systemd-boot-efi, which ``make host-deps``
installs) signed with sbsign by throwaway keys made here with openssl, checked by the real sbverify; the
host's firmware state is the SecureBoot variable as efivarfs shows it, in the fake host root; the apply
cases run the real CLI against a real TUF repository on 127.0.0.1 (full payload) and the update server's
chunked repository (delta), and prove that a refused release leaves the slots and the ESP as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from qx_common.errors import EnvironmentError_
from qx_update import secureboot
from qx_update.errors import VerificationError
from tests.updates.conftest import Host, make_host, payload, sha
from tests.updates.tufrepo import STUB, TufRepo, uki_with_cmdline, verity_cmdline



@dataclass(frozen=True)
class Keys:
    dir: Path
    trusted_cert: Path
    foreign_cert: Path
    unsigned: Path
    trusted: Path        # signed by the trusted key
    foreign: Path        # signed by another key
    flipped: Path        # signed by the trusted key, then one byte changed


def _pair(d: Path, name: str, cn: str) -> tuple[Path, Path]:
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes", "-days", "30",
                    "-subj", f"/CN={cn}/", "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return key, crt


def _sign(src: Path, dst: Path, key: Path, crt: Path) -> Path:
    subprocess.run(["sbsign", "--key", str(key), "--cert", str(crt), "--output", str(dst), str(src)],
                   check=True, capture_output=True)
    return dst


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    assert STUB.is_file(), f"{STUB} is missing: apt-get install systemd-boot-efi (make host-deps-test)"
    d = tmp_path_factory.mktemp("sb")
    tkey, tcrt = _pair(d, "trusted", "Quantix test db trusted")
    fkey, fcrt = _pair(d, "foreign", "Someone else db")
    unsigned = d / "unsigned.efi"
    shutil.copyfile(STUB, unsigned)
    trusted = _sign(unsigned, d / "trusted.efi", tkey, tcrt)
    foreign = _sign(unsigned, d / "foreign.efi", fkey, fcrt)
    data = bytearray(trusted.read_bytes())
    data[0x400] ^= 0x01            # inside the first section: covered by the Authenticode hash
    flipped = d / "flipped.efi"
    flipped.write_bytes(bytes(data))
    return Keys(d, tcrt, fcrt, unsigned, trusted, foreign, flipped)


def _efivars(tmp_path: Path, value: int | None, raw: bytes | None = None) -> Path:
    d = tmp_path / "efivars"
    d.mkdir(parents=True)
    if value is not None or raw is not None:
        (d / secureboot.SECURE_BOOT_VAR).write_bytes(raw if raw is not None else b"\x06\0\0\0" + bytes([value or 0]))
    return d


# -- the check itself ------------------------------------------------------------------------------

def test_state_reads_the_efi_variable(tmp_path: Path) -> None:
    assert secureboot.state(tmp_path / "none") == "no-uefi"
    assert secureboot.state(_efivars(tmp_path / "on", 1)) == "enabled"
    assert secureboot.state(_efivars(tmp_path / "off", 0)) == "disabled"
    assert secureboot.state(_efivars(tmp_path / "unset", None)) == "disabled"
    with pytest.raises(EnvironmentError_, match="2 bytes, not the 4 attribute bytes and 1 data byte"):
        secureboot.state(_efivars(tmp_path / "bad", None, raw=b"\x01\x01"))


def test_signed_by_the_trusted_key_is_accepted(tmp_path: Path, keys: Keys) -> None:
    res = secureboot.check_uki(keys.trusted, version="1.1.0", efivars_dir=_efivars(tmp_path, 1), cert=keys.trusted_cert)
    assert res.verified and res.secure_boot == "enabled"
    assert "CN=Quantix test db trusted" in res.note


def test_unsigned_is_refused(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(VerificationError) as e:
        secureboot.check_uki(keys.unsigned, version="1.1.0", efivars_dir=_efivars(tmp_path, 1), cert=keys.trusted_cert)
    assert "release 1.1.0" in e.value.message and "is not signed" in e.value.message
    assert "CN=Quantix test db trusted" in e.value.message and "nothing was installed" in e.value.message
    assert e.value.hint and "signed with the key of CN=Quantix test db trusted" in e.value.hint
    assert e.value.exit_code == 5


def test_signed_by_another_key_is_refused_naming_both(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(VerificationError) as e:
        secureboot.check_uki(keys.foreign, version="1.1.0", efivars_dir=_efivars(tmp_path, 1), cert=keys.trusted_cert)
    assert "is signed by CN=Someone else db" in e.value.message
    assert "trusts CN=Quantix test db trusted" in e.value.message
    assert e.value.hint and "enroll" in e.value.hint


def test_one_flipped_byte_after_signing_is_refused(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(VerificationError) as e:
        secureboot.check_uki(keys.flipped, version="1.1.0", efivars_dir=_efivars(tmp_path, 1), cert=keys.trusted_cert)
    assert "signature does not verify" in e.value.message and "changed after signing" in e.value.message


def test_secure_boot_off_accepts_any_uki_with_a_note(tmp_path: Path, keys: Keys) -> None:
    for name, efivars in (("off", _efivars(tmp_path / "off", 0)), ("bios", tmp_path / "no-efivars")):
        for uki in (keys.unsigned, keys.foreign):
            res = secureboot.check_uki(uki, version="1.1.0", efivars_dir=efivars, cert=tmp_path / "no-cert")
            assert not res.verified, name
            assert "the signature of 1.1.0's UKI was not checked" in res.note


def test_secure_boot_on_without_the_hosts_certificate_is_refused(tmp_path: Path, keys: Keys) -> None:
    with pytest.raises(EnvironmentError_, match="has no certificate to check 1.1.0's UKI against"):
        secureboot.check_uki(keys.trusted, version="1.1.0", efivars_dir=_efivars(tmp_path, 1),
                             cert=tmp_path / "missing.crt")


def test_a_signature_by_a_certificate_the_trusted_one_issued_is_accepted(tmp_path: Path, keys: Keys) -> None:
    """The host's certificate may be a CA (a vendor's db entry): a UKI signed by a certificate it issued
    chains to it; changed after signing, it is refused as changed, not as another key's."""
    d = tmp_path
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-sha256", "-nodes", "-days", "30",
                    "-subj", "/CN=Quantix test CA/", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"),
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"],
                   check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=Quantix test leaf/",
                    "-keyout", str(d / "leaf.key"), "-out", str(d / "leaf.csr")], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(d / "leaf.csr"), "-CA", str(d / "ca.crt"), "-CAkey",
                    str(d / "ca.key"), "-CAcreateserial", "-days", "30", "-sha256", "-out", str(d / "leaf.crt")],
                   check=True, capture_output=True)
    signed = _sign(keys.unsigned, d / "leaf.efi", d / "leaf.key", d / "leaf.crt")
    efivars = _efivars(d, 1)
    assert secureboot.check_uki(signed, version="1.1.0", efivars_dir=efivars, cert=d / "ca.crt").verified
    with pytest.raises(VerificationError, match="is signed by CN=Quantix test leaf, but this host"):
        secureboot.check_uki(signed, version="1.1.0", efivars_dir=efivars, cert=keys.trusted_cert)
    data = bytearray(signed.read_bytes())
    data[0x400] ^= 0x01
    (d / "leaf-flipped.efi").write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="changed after signing"):
        secureboot.check_uki(d / "leaf-flipped.efi", version="1.1.0", efivars_dir=efivars, cert=d / "ca.crt")


def test_a_uki_signed_twice_is_accepted_by_a_host_trusting_either_key(tmp_path: Path, keys: Keys) -> None:
    """sbsign on a signed PE adds a second signature (what a key change needs: old and new); the host's
    certificate has to verify one of them, as UEFI firmware requires."""
    fkey, tkey = keys.dir / "foreign.key", keys.dir / "trusted.key"
    both = _sign(_sign(keys.unsigned, tmp_path / "f.efi", fkey, keys.foreign_cert), tmp_path / "ft.efi", tkey,
                 keys.trusted_cert)
    efivars = _efivars(tmp_path, 1)
    for cert in (keys.trusted_cert, keys.foreign_cert):
        assert secureboot.check_uki(both, version="1.1.0", efivars_dir=efivars, cert=cert).verified
    assert {secureboot.subject(c) for c in secureboot.signer_certificates(both)} == {
        "CN=Someone else db", "CN=Quantix test db trusted"}


def test_signer_certificates_are_read_from_the_pe(keys: Keys) -> None:
    assert [secureboot.subject(c) for c in secureboot.signer_certificates(keys.foreign)] == ["CN=Someone else db"]
    assert secureboot.signer_certificates(keys.unsigned) == []


# -- apply, end to end -------------------------------------------------------------------------------

def _untouched(host: Host) -> dict[str, object]:
    """Everything a refused apply must leave as it was: both slots and the whole ESP."""
    return {"fingerprint": host.fingerprint(), "slot_b": sha(host.slots["b"]),
            "esp": sorted((str(p.relative_to(host.esp)), p.read_bytes()) for p in host.esp.rglob("*") if p.is_file())}


@pytest.mark.parametrize("case", ["unsigned", "foreign", "flipped"])
def test_apply_refuses_before_writing_anything(host: Host, repo: TufRepo, keys: Keys, case: str) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(11), channels=["stable"], uki=getattr(keys, case).read_bytes())
    host.secure_boot(True, keys.trusted_cert)
    before = _untouched(host)
    res = host.run("apply", check=False)
    assert res.returncode == 5, res.stderr
    assert "release 1.1.0" in res.stderr and "nothing was installed" in res.stderr
    assert _untouched(host) == before
    st = host.json("status")
    assert st["pending"] is None and "release 1.1.0" in st["last_error"]["message"]
    assert st["secure_boot"]["state"] == "enabled" and st["secure_boot"]["checks_releases"] is True
    # The root payload was never fetched: the UKI is checked first.
    assert not list((host.state_dir / "downloads").glob("*.root.erofs.zst*"))
    # The release is refused on this host from now on (not fetched again by every timer run), and says why.
    refused = st["refused"]["1.1.0"]
    assert refused["cause"] == "secure-boot" and refused["reason"], refused
    chk = host.json("check")
    assert chk["available"] is None, chk
    (skip,) = [s for s in chk["skipped"] if s["version"] == "1.1.0"]
    assert "would not boot under this host's Secure Boot" in skip["reason"] and "allow 1.1.0" in skip["reason"]
    assert "refused: 1.1.0: its UKI would not boot under this host's Secure Boot" in host.run("status").stdout
    again = host.run("--json", "apply")
    assert json.loads(again.stdout.strip().splitlines()[-1])["applied"] is None, again.stdout
    # 'allow' is the operator's retry (after enrolling the certificate, or a fixed publish): offered again.
    host.run("allow", "1.1.0")
    assert host.json("check")["available"]["version"] == "1.1.0"


def test_apply_installs_a_release_signed_with_the_hosts_key(host: Host, repo: TufRepo, keys: Keys) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(12), channels=["stable"], uki=keys.trusted.read_bytes())
    host.secure_boot(True, keys.trusted_cert)
    res = host.json("apply")
    assert res["applied"]["version"] == "1.1.0" and res["slot"] == "b"
    assert (host.esp / "EFI/quantix/quantix-os_1.1.0.efi").read_bytes() == keys.trusted.read_bytes()
    assert "not checked" not in res["message"]


def test_apply_with_secure_boot_off_installs_an_unsigned_uki_and_says_so(host: Host, repo: TufRepo,
                                                                          keys: Keys) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(13), channels=["stable"], uki=keys.unsigned.read_bytes())
    host.secure_boot(False, keys.trusted_cert)
    res = host.json("apply")
    assert res["applied"]["version"] == "1.1.0"
    assert "Secure Boot is off on this host: the signature of 1.1.0's UKI was not checked" in res["message"]
    st = host.json("status")
    assert st["secure_boot"]["state"] == "disabled" and st["secure_boot"]["checks_releases"] is False
    assert "Secure Boot is off: release UKIs are installed without a signature check" in host.run("status").stdout


def test_delta_apply_checks_the_assembled_uki(tmp_path: Path, keys: Keys) -> None:
    """A release with chunk indexes: its UKI is assembled from chunks (qx_update.delta) — then checked
    the same way, before the slot is written from chunks."""
    from tests.updates.deltarepo import erofs, make_tree
    from tests.updates.test_delta import SLOT, Server

    srv = Server(tmp_path / "server")
    try:
        image = erofs(make_tree(tmp_path / "tree"), tmp_path / "n.erofs")
        srv.publish("1.1.0", image, keys.foreign.read_bytes())
        host = make_host(tmp_path / "host", srv.repo.root_bytes(1), srv.http.url)
        for p in host.slots.values():
            with p.open("r+b") as f:
                f.truncate(SLOT)
        host.secure_boot(True, keys.trusted_cert)
        before = _untouched(host)
        res = host.run("apply", check=False)
        assert res.returncode == 5 and "is signed by CN=Someone else db" in res.stderr, res.stderr
        assert _untouched(host) == before
        asked = [p for p, _, _ in srv.http.requests]
        assert any(p.endswith(".efi.chunks.json") for p in asked), "the UKI went the delta path (its index)"
        assert not any(p.endswith(".root.erofs.zst") for p in asked), "the root payload was never fetched"
        # Signed with the host's key, the same release line goes in (delta).
        srv.publish("1.2.0", image, keys.trusted.read_bytes())
        ok = host.json("apply")
        assert ok["applied"]["version"] == "1.2.0" and "delta: fetched" in ok["message"], ok
        assert (host.esp / "EFI/quantix/quantix-os_1.2.0.efi").read_bytes() == keys.trusted.read_bytes()
    finally:
        srv.http.close()


def test_status_and_apply_when_the_variable_cannot_be_read_as_uefi_defines(host: Host, repo: TufRepo,
                                                                          keys: Keys) -> None:
    """A SecureBoot variable that is not 5 bytes: status says so (and that apply refuses), apply stops
    with exit 3 before writing anything — never guesses "off"."""
    from qx_update import UpdateStatus

    repo.add_release("1.1.0", slot_bytes=payload(14), channels=["stable"], uki=keys.unsigned.read_bytes())
    host.secure_boot(True, keys.trusted_cert)
    (host.dir / "efivars" / secureboot.SECURE_BOOT_VAR).write_bytes(b"\x06\0\0\0\x01\x00")
    st = UpdateStatus.from_json(host.run("--json", "status").stdout)
    assert st.secure_boot is not None and st.secure_boot.state == "unknown" and st.secure_boot.checks_releases
    assert "6 bytes" in st.secure_boot.note
    before = _untouched(host)
    res = host.run("apply", check=False)
    assert res.returncode == 3 and "not the 4 attribute bytes and 1 data byte" in res.stderr, res.stderr
    assert _untouched(host) == before


def test_sbverify_without_a_verdict_refuses_nothing_for_good(host: Host, repo: TufRepo, keys: Keys,
                                                             tmp_path: Path) -> None:
    """sbverify killed (out of memory, a signal) gives no verdict on a correctly signed release: nothing is
    installed, and nothing is recorded against the release — the next run installs it."""
    repo.add_release("1.1.0", slot_bytes=payload(13), channels=["stable"], uki=keys.trusted.read_bytes())
    host.secure_boot(True, keys.trusted_cert)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbverify").write_text("#!/bin/sh\nkill -KILL $$\n")
    (fake / "sbverify").chmod(0o755)
    res = host.run("apply", check=False, env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert res.returncode == 4 and "sbverify gave no verdict" in res.stderr, res.stderr
    st = host.json("status")
    assert st["refused"] == {} and st["pending"] is None, st
    assert host.json("apply")["applied"]["version"] == "1.1.0"


def test_a_refusal_holds_for_that_uki_and_certificate_only(host: Host, repo: TufRepo, keys: Keys) -> None:
    """Refused for its foreign signature; the status no longer offers it and the refused UKI is not kept.
    When the host trusts another certificate (an upgrade shipped the other one), it is checked again."""
    repo.add_release("1.1.0", slot_bytes=payload(14), channels=["stable"], uki=keys.foreign.read_bytes())
    host.secure_boot(True, keys.trusted_cert)
    assert host.run("apply", check=False).returncode == 5
    st = host.json("status")
    assert st["state"] != "update-available" and st["last_check"]["result"] == "up-to-date", st
    assert not list((host.state_dir / "downloads").glob("*.efi")), "the refused UKI is not kept"
    assert host.json("check")["available"] is None
    # The host now trusts the certificate that signed the release: offered and installed.
    host.secure_boot(True, keys.foreign_cert)
    assert host.json("check")["available"]["version"] == "1.1.0"
    assert host.json("apply")["applied"]["version"] == "1.1.0"


def _uki_with_cmdline(d: Path, cmdline: str, keys: Keys) -> Path:
    """The stub with a .cmdline section (as ukify lays one out), signed by the trusted key."""
    raw = uki_with_cmdline(cmdline, d)
    return _sign(raw, d / "with-cmdline.signed.efi", keys.dir / "trusted.key", keys.trusted_cert)


def test_the_uki_s_own_command_line_is_read_from_its_pe_sections(tmp_path: Path, keys: Keys) -> None:
    uki = _uki_with_cmdline(tmp_path, "root=PARTLABEL=root-a rootfstype=erofs ro console=ttyS0", keys)
    assert secureboot.uki_cmdline(uki) == "root=PARTLABEL=root-a rootfstype=erofs ro console=ttyS0"
    assert secureboot.uki_cmdline(keys.unsigned) is None          # no .cmdline section
    (tmp_path / "junk.efi").write_bytes(b"MZ" + b"\xff" * 100)
    assert secureboot.uki_cmdline(tmp_path / "junk.efi") is None
    assert secureboot.pinned_root("root=PARTLABEL=root-a ro root=PARTLABEL=root-b") == "root-b"
    assert secureboot.pinned_root("root=UUID=1234 ro") is None and secureboot.pinned_root(None) is None
    # A verity line mounts the verity device: no slot is pinned (its root hash picks the partitions).
    assert secureboot.pinned_root(f"root=/dev/mapper/root ro roothash={'ab' * 32}") is None


def test_secure_boot_refuses_a_uki_that_would_boot_the_old_slot(host: Host, repo: TufRepo, keys: Keys,
                                                                tmp_path: Path) -> None:
    """Under Secure Boot the stub ignores the entry's root=: a UKI whose signed command line pins root-a
    cannot start slot B. The host (running A) refuses it before writing anything, instead of booting the
    new kernel on the old root and writing slot B again on every run."""
    uki = _uki_with_cmdline(tmp_path, "root=PARTLABEL=root-a rootfstype=erofs ro", keys)
    repo.add_release("1.1.0", slot_bytes=payload(15), channels=["stable"], uki=uki.read_bytes())
    host.secure_boot(True, keys.trusted_cert)
    before = _untouched(host)
    res = host.run("apply", check=False)
    assert res.returncode == 5 and "boots only the root its signed command line names" in res.stderr, res.stderr
    assert "reinstall, keep-data" in res.stderr
    assert _untouched(host) == before
    refused = host.json("status")["refused"]["1.1.0"]
    assert refused["cause"] == "secure-boot" and "boots root-a only, not root-b" in refused["reason"], refused
    # With Secure Boot off the entry's options pick the slot: the same release installs into B.
    host.run("allow", "1.1.0")
    host.secure_boot(False)
    assert host.json("apply")["applied"]["version"] == "1.1.0"


def test_secure_boot_installs_a_verity_release_into_the_other_slot(host: Host, repo: TufRepo, keys: Keys,
                                                                  tmp_path: Path) -> None:
    """A verity UKI names its root by the root hash, not by a slot: under Secure Boot a host running A
    installs it into B (nothing is refused as pinned), its tree on B's verity partition, and the entry
    carries the signed command line unchanged."""
    slot_bytes = payload(16)
    roothash, cmdline = verity_cmdline(slot_bytes)
    uki = _uki_with_cmdline(tmp_path, cmdline, keys)
    repo.add_release("1.1.0", slot_bytes=slot_bytes, channels=["stable"], uki=uki.read_bytes(), verity=True)
    host.secure_boot(True, keys.trusted_cert)
    host.with_verity()
    res = host.json("apply")
    assert res["applied"]["version"] == "1.1.0" and res["slot"] == "b", res
    assert not host.json("status")["refused"]
    assert f"options {cmdline}\n" in (host.esp / "loader/entries/quantix-b+3.conf").read_text()
    assert host.verity is not None and host.verity["b"].stat().st_size > 0
    assert secureboot.uki_cmdline(host.esp / "EFI/quantix/quantix-os_1.1.0.efi") == cmdline and roothash in cmdline
