"""Secure Boot signing (qx_build.secureboot) on real files: the development pair made once, SB_KEY/SB_CERT
refused by name when firmware or sbsign could not use them, real sbsign/sbverify on the host's
systemd-boot, the repro comparison that sets sbsign's time-stamped signatures aside, the live UKI
signed by ukify, and the ESP's loader.conf that never enrolls keys by itself."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from qx_build import pe, secureboot
from qx_common.errors import ExternalError, UserError
from qx_update import bootentry

HOST_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")   # systemd-boot-efi (image/host-deps.sh)


def _openssl_pair(d: Path, name: str, *, newkey: str = "rsa:2048") -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.crt"
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", newkey, "-nodes", "-keyout", key, "-out", cert,
                    "-days", "30", "-subj", f"/CN={name}"], check=True, capture_output=True)
    return key, cert


def test_the_development_pair_is_made_once_private_and_kept(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    kp = secureboot.ensure_dev_keys(keys)
    assert kp.development and kp.key == keys / "secureboot" / "db.key"
    assert (kp.key.stat().st_mode & 0o777) == 0o600
    assert "development" in (keys / "secureboot" / secureboot.DEV_NOTE).read_text()
    before = kp.key.read_bytes(), kp.cert.read_bytes()
    again = secureboot.ensure_dev_keys(keys)
    assert (again.key.read_bytes(), again.cert.read_bytes()) == before   # never replaced: hosts enrolled it
    rec = secureboot.record(kp)
    assert rec["keys"] == "development" and rec["signed"] is True
    der = x509.load_pem_x509_certificate(kp.cert.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert rec["certificate_sha256"] == __import__("hashlib").sha256(der).hexdigest()
    assert rec["certificate_pem"] == kp.cert.read_text()


def test_a_foreign_directory_is_not_taken_for_the_pair(tmp_path: Path) -> None:
    (tmp_path / "keys/secureboot").mkdir(parents=True)
    (tmp_path / "keys/secureboot/notes.txt").write_text("mine")
    with pytest.raises(UserError) as e:
        secureboot.ensure_dev_keys(tmp_path / "keys")
    assert "secureboot" in e.value.message and "move" in (e.value.hint or "")


def test_sb_key_and_sb_cert_come_together_and_must_match(tmp_path: Path) -> None:
    key, cert = _openssl_pair(tmp_path, "a")
    other_key, other_cert = _openssl_pair(tmp_path, "b")
    with pytest.raises(UserError) as e:
        secureboot.resolve(key, None, dev_keys=tmp_path / "dev")
    assert e.value.message.startswith("SB_CERT is missing") and "SB_KEY=" in (e.value.hint or "")
    with pytest.raises(UserError) as e:
        secureboot.resolve(None, cert, dev_keys=tmp_path / "dev")
    assert e.value.message.startswith("SB_KEY is missing")
    with pytest.raises(UserError) as e:
        secureboot.resolve(key, other_cert, dev_keys=tmp_path / "dev")
    assert "do not belong together" in e.value.message
    assert not (tmp_path / "dev").exists()   # a refused pair never falls back to development keys
    kp = secureboot.resolve(key, cert, dev_keys=tmp_path / "dev")
    assert not kp.development and secureboot.record(kp)["keys"] == "given"


def test_keys_firmware_or_sbsign_cannot_use_are_refused_by_name(tmp_path: Path) -> None:
    key, cert = _openssl_pair(tmp_path, "rsa")
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate\n")
    with pytest.raises(UserError) as e:
        secureboot.validate(key, bad)
    assert e.value.message.startswith("SB_CERT:") and "PEM X.509" in e.value.message
    der = tmp_path / "c.der"
    der.write_bytes(x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(serialization.Encoding.DER))
    with pytest.raises(UserError) as e:
        secureboot.validate(key, der)
    assert "openssl x509 -inform DER" in (e.value.hint or "")
    # An encrypted key: sbsign would stop and ask for the passphrase.
    enc = tmp_path / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", key, "-out", enc, "-aes256", "-passout", "pass:x"], check=True)
    with pytest.raises(UserError) as e:
        secureboot.validate(enc, cert)
    assert e.value.message.startswith("SB_KEY:") and "passphrase" in e.value.message
    # An EC key and its certificate: valid X.509, but UEFI firmware verifies RSA only.
    ec_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "ec")])
    import datetime as dt
    now = dt.datetime.now(dt.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ec_key.public_key())
         .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1)).sign(ec_key, hashes.SHA256()))
    (tmp_path / "ec.key").write_bytes(ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    (tmp_path / "ec.crt").write_bytes(c.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(UserError) as e:
        secureboot.validate(tmp_path / "ec.key", tmp_path / "ec.crt")
    assert "RSA only" in e.value.message
    with pytest.raises(UserError) as e:
        secureboot.validate(tmp_path / "missing.key", cert)
    assert e.value.message.startswith("SB_KEY: cannot read")


def test_sign_and_verify_on_a_real_boot_loader(tmp_path: Path) -> None:
    kp = secureboot.ensure_dev_keys(tmp_path / "keys")
    other = secureboot.KeyPair(*_openssl_pair(tmp_path, "other"), development=False)
    with pytest.raises(ExternalError) as e:
        secureboot.verify(HOST_BOOT, kp, what="an unsigned loader")   # Debian's systemd-boot is unsigned
    assert "an unsigned loader" in e.value.message
    signed = tmp_path / "BOOTX64.EFI"
    secureboot.sign(HOST_BOOT, signed, kp)
    secureboot.verify(signed, kp, what="the signed loader")
    assert pe.is_signed(signed) and not pe.is_signed(HOST_BOOT)
    with pytest.raises(ExternalError):
        secureboot.verify(signed, other, what="signed by another key")
    # One changed byte in the signed code: the firmware's check (sbverify's) refuses it.
    data = bytearray(signed.read_bytes())
    text = next(s for s in pe.sections(signed) if s.name == ".text")
    data[text.offset + text.size // 2] ^= 0x01
    tampered = tmp_path / "tampered.efi"
    tampered.write_bytes(bytes(data))
    with pytest.raises(ExternalError):
        secureboot.verify(tampered, kp, what="a tampered loader")


def test_two_signings_differ_only_in_what_the_repro_check_sets_aside(tmp_path: Path) -> None:
    kp = secureboot.ensure_dev_keys(tmp_path / "keys")
    a, b = tmp_path / "a.efi", tmp_path / "b.efi"
    secureboot.sign(HOST_BOOT, a, kp)
    time.sleep(1.1)   # sbsign's signing time has 1 s resolution: the second signature must differ
    secureboot.sign(HOST_BOOT, b, kp)
    assert a.read_bytes() != b.read_bytes()                        # the signing time differs
    assert pe.content_sha256(a) == pe.content_sha256(b)
    # …and any other byte still counts.
    data = bytearray(b.read_bytes())
    text = next(s for s in pe.sections(b) if s.name == ".text")
    data[text.offset + 7] ^= 0x01
    b.write_bytes(bytes(data))
    assert pe.content_sha256(a) != pe.content_sha256(b)


def test_the_esp_never_enrolls_keys_by_itself() -> None:
    conf = bootentry.render_loader_conf()
    assert "secure-boot-enroll manual\n" in conf
    assert bootentry.ENROLL_KEYS_DIR == "loader/keys/auto"


def test_the_image_ships_the_signing_certificate_where_qx_update_reads_it(tmp_path: Path) -> None:
    """The host's copy of the certificate its boot chain is signed with: staged beside the TUF root,
    installed by postinst at the one path qx-update's config defaults to (qx_common.hostpaths)."""
    from qx_common import hostpaths
    from qx_update.config import Config

    kp = secureboot.ensure_dev_keys(tmp_path / "keys")
    trust_dir = tmp_path / "trust"
    secureboot.stage_certificate(kp, trust_dir)
    staged = trust_dir / secureboot.STAGED_CERT
    assert x509.load_pem_x509_certificate(staged.read_bytes()) == x509.load_pem_x509_certificate(kp.cert.read_bytes())
    assert sorted(p.name for p in trust_dir.iterdir()) == [secureboot.STAGED_CERT]   # no temp file left
    assert str(hostpaths.SECURE_BOOT_CERT) == secureboot.IMAGE_CERT == str(Config().secure_boot_cert)
    postinst = (Path(__file__).resolve().parents[2] / "image/scripts/postinst.chroot").read_text()
    assert f'install -D -m 0644 "$src/trust/{secureboot.STAGED_CERT}" {secureboot.IMAGE_CERT}' in postinst
    mkosi_conf = (Path(__file__).resolve().parents[2] / "mkosi.conf").read_text()
    assert "\n        sbsigntool\n" in mkosi_conf, "qx-update runs sbverify on the host: the image needs sbsigntool"
