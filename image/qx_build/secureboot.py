"""Secure Boot signing of the boot chain: systemd-boot and every UKI a build makes.

``make image SB_KEY=db.key SB_CERT=db.crt`` (``qx-build image --sb-key --sb-cert``) signs with the
given key pair; without them a build signs with the *development* key pair in ``build/keys/secureboot/``
(:func:`ensure_dev_keys`: made once, kept across builds, named on every build and in the release
manifest as ``"keys": "development"``), so a default ``make image`` always produces a signed chain that
the e2e tests boot under an enforcing firmware.

What is signed, and by whom (each file once, by the tool that makes it):

- the disk image's ESP: systemd-boot (``EFI/BOOT/BOOTX64.EFI``, ``EFI/systemd/systemd-bootx64.efi``) and
  the UKI — mkosi's own ``SecureBoot=`` settings (:func:`mkosi_args`), which also write the
  auto-enrollment files ``loader/keys/auto/{PK,KEK,db}.auth`` (``SecureBootAutoEnroll=``);
- the update artifact's UKI (``quantix-os_<v>.efi``): the same file as the disk's UKI;
- the live ISO's UKI: ukify with ``--secureboot-private-key``/``--secureboot-certificate``
  (:func:`ukify_args`, used by :mod:`qx_build.live`);
- the install payload's systemd-boot: :func:`sign` (sbsign), from the unsigned binary the finalize
  script exported; its UKI is the release's UKI.

Invariant: a build publishes no boot binary that :func:`verify` (sbverify against the certificate)
refuses; :mod:`qx_build.build` checks every one of them before the release is published. Enrollment
(which certificate the firmware trusts) is the operator's decision: ``loader.conf`` says
``secure-boot-enroll manual`` (``qx_update.bootentry``), see docs/secure-boot.md.

Call order: :func:`resolve` (validates SB_KEY/SB_CERT or makes the development pair) before mkosi;
its :class:`KeyPair` goes to mkosi, live, installpayload and :func:`verify`; :func:`stage_certificate`
(the image's own copy of the certificate, for qx-update) before mkosi; :func:`record` into the manifest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qx_common import hostpaths, log
from qx_common import run as r
from qx_common.errors import ExternalError, UserError

DEV_SUBDIR = "secureboot"
KEY_NAME = "db.key"
CERT_NAME = "db.crt"
DEV_NOTE = "DEVELOPMENT-KEYS.txt"
# The certificate the image ships (qx_common.hostpaths.SECURE_BOOT_CERT), staged beside the TUF root.
STAGED_CERT = "secureboot-db.crt"
IMAGE_CERT = str(hostpaths.SECURE_BOOT_CERT)
DEV_WARNING = ("development Secure Boot keys: systemd-boot and the UKIs are signed with build/keys/secureboot/, "
               "whose private key sits unprotected on this machine — fine for VMs and lab servers that enrolled "
               "it, never for hosts you ship; a release build passes SB_KEY=<db.key> SB_CERT=<db.crt>")
_SB_HINT = ("pass both, a PEM RSA private key and its PEM X.509 certificate: make image SB_KEY=db.key SB_CERT=db.crt "
            "(docs/secure-boot.md), or neither for development keys")


@dataclass(frozen=True)
class KeyPair:
    key: Path
    cert: Path
    development: bool


def _load_cert(cert: Path):  # noqa: ANN202 - cryptography's Certificate
    from cryptography import x509

    try:
        data = cert.read_bytes()
    except OSError as e:
        raise UserError(f"SB_CERT: cannot read {cert}: {e.strerror or e}", hint=_SB_HINT) from e
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise UserError(f"SB_CERT: {cert} is not a PEM X.509 certificate ({e})",
                        hint=f"a DER certificate converts with: openssl x509 -inform DER -in {cert} -out db.crt") from e


def validate(key: Path, cert: Path) -> None:
    """Refuse a key pair sbsign or a UEFI firmware could not use; each error names SB_KEY or SB_CERT."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    c = _load_cert(cert)
    try:
        data = key.read_bytes()
    except OSError as e:
        raise UserError(f"SB_KEY: cannot read {key}: {e.strerror or e}", hint=_SB_HINT) from e
    try:
        k = serialization.load_pem_private_key(data, password=None)
    except TypeError as e:  # encrypted: sbsign would stop and ask for the passphrase on a terminal
        raise UserError(f"SB_KEY: {key} is encrypted with a passphrase",
                        hint=f"sign from an unencrypted copy on a protected machine: "
                             f"openssl pkey -in {key} -out db.key") from e
    except ValueError as e:
        raise UserError(f"SB_KEY: {key} is not a PEM private key ({e})", hint=_SB_HINT) from e
    # UEFI firmware verifies Authenticode signatures with RSA (EDK2 and the big vendors: 2048-4096 bits).
    if not isinstance(k, rsa.RSAPrivateKey):
        raise UserError(f"SB_KEY: {key} is a {type(k).__name__.removeprefix('_')} key; UEFI firmware verifies RSA only",
                        hint="make an RSA key: openssl req -new -x509 -newkey rsa:2048 -nodes -keyout db.key -out db.crt")
    if k.key_size < 2048 or k.key_size > 4096:
        raise UserError(f"SB_KEY: RSA-{k.key_size} is outside what firmware accepts (2048-4096 bits)",
                        hint="make an RSA-2048 or RSA-4096 key pair")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if k.public_key().public_bytes(enc, pub) != c.public_key().public_bytes(enc, pub):
        raise UserError(f"SB_KEY and SB_CERT do not belong together: {cert} certifies another key than {key}",
                        hint="pass the certificate made for this key (openssl x509 -noout -pubkey shows its key)")
    if c.not_valid_after_utc < dt.datetime.now(dt.timezone.utc):
        # Firmware ignores expiry (there is no trusted clock at boot); say it, do not refuse.
        log.step(f"WARNING: SB_CERT {cert} expired on {c.not_valid_after_utc:%Y-%m-%d} "
                 "(firmware does not check it, but renew it before enrolling it on new servers)")


def ensure_dev_keys(keys_dir: Path) -> KeyPair:
    """The development pair in ``keys_dir/secureboot/``, made the first time only (never replaced:
    servers and VM variable stores that enrolled its certificate keep booting new builds)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    d = keys_dir / DEV_SUBDIR
    key, cert = d / KEY_NAME, d / CERT_NAME
    if not (key.exists() and cert.exists()):
        if d.exists() and any(d.iterdir()):
            raise UserError(f"{d}: holds files but not {KEY_NAME} and {CERT_NAME}",
                            hint=f"move {d} away (qx-build did not make it) and build again")
        log.step(f"secure boot: creating a development key pair in {d} (once)")
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{DEV_SUBDIR}.", dir=d.parent))
        k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                             f"Quantix OS development Secure Boot db ({socket.gethostname()[:32]})")])
        now = dt.datetime.now(dt.timezone.utc)
        c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
             .not_valid_after(now + dt.timedelta(days=3650))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .sign(k, hashes.SHA256()))
        fd = os.open(tmp / KEY_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
        (tmp / CERT_NAME).write_bytes(c.public_bytes(serialization.Encoding.PEM))
        (tmp / DEV_NOTE).write_text(
            "This Secure Boot key pair was made by 'make image' for development: " + DEV_WARNING + ".\n"
            f"Images built without SB_KEY are signed with it; enroll {CERT_NAME} only in test machines.\n")
        if d.exists():
            d.rmdir()  # empty (checked above)
        tmp.rename(d)  # whole or not at all: a killed build leaves no half-made pair under the real name
    validate(key, cert)
    return KeyPair(key, cert, development=True)


def resolve(sb_key: Path | None, sb_cert: Path | None, *, dev_keys: Path) -> KeyPair:
    """SB_KEY + SB_CERT (validated), or the development pair in ``dev_keys``; one without the other is an error."""
    if (sb_key is None) != (sb_cert is None):
        missing = "SB_CERT" if sb_cert is None else "SB_KEY"
        raise UserError(f"{missing} is missing: Secure Boot signing needs SB_KEY and SB_CERT together", hint=_SB_HINT)
    if sb_key is None or sb_cert is None:
        kp = ensure_dev_keys(dev_keys)
        log.step(f"WARNING: {DEV_WARNING}")
        return kp
    validate(sb_key, sb_cert)
    log.step(f"secure boot: signing with {sb_key} ({sb_cert})")
    return KeyPair(sb_key.resolve(), sb_cert.resolve(), development=False)


def mkosi_args(kp: KeyPair) -> list[str]:
    """mkosi signs systemd-boot and the UKI and writes ``loader/keys/auto/*.auth`` (one certificate as
    PK, KEK and db: what an operator enrolls from systemd-boot's menu in setup mode). No signed PCR
    policy: with the key at hand mkosi would run systemd-measure, which needs TPM2 libraries the build
    host lacks (and nothing here seals secrets to PCRs yet)."""
    return ["--secure-boot=yes", f"--secure-boot-key={kp.key}", f"--secure-boot-certificate={kp.cert}",
            "--secure-boot-sign-tool=sbsign", "--secure-boot-auto-enroll=yes", "--sign-expected-pcr=no"]


def ukify_args(kp: KeyPair) -> list[str]:
    return ["--signtool", "sbsign", "--secureboot-private-key", str(kp.key),
            "--secureboot-certificate", str(kp.cert), "--sign-kernel"]


def sign(src: Path, dst: Path, kp: KeyPair) -> None:
    """An Authenticode-signed copy of the PE binary ``src`` at ``dst``."""
    dst.unlink(missing_ok=True)
    r.run(["sbsign", "--key", str(kp.key), "--cert", str(kp.cert), "--output", str(dst), str(src)])


def verify(binary: Path, kp: KeyPair, *, what: str) -> None:
    """Raise unless ``binary`` carries a valid signature by ``kp.cert`` (what the firmware will check)."""
    res = r.run(["sbverify", "--cert", str(kp.cert), str(binary)], check=False)
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()
        raise ExternalError(f"{what} ({binary.name}) is not signed by {kp.cert}: {detail[-1] if detail else 'sbverify failed'}",
                            hint="a signing step was skipped: make clean; make image (and report it)")


def stage_certificate(kp: KeyPair, trust_dir: Path) -> None:
    """Put the signing certificate into ``trust_dir`` (mkosi's ``/work/src/trust``), which
    ``image/scripts/postinst.chroot`` installs as :data:`qx_common.hostpaths.SECURE_BOOT_CERT`
    (``/usr/share/quantix/secureboot/db.crt``): the running host's copy of the certificate its own boot
    chain was signed with, against which qx-update checks a release's UKI while Secure Boot is on. Call
    after :func:`qx_build.trust.stage` (which empties ``trust_dir``)."""
    from cryptography.hazmat.primitives import serialization

    pem = _load_cert(kp.cert).public_bytes(serialization.Encoding.PEM)  # PEM, whatever else the file held
    trust_dir.mkdir(parents=True, exist_ok=True)
    tmp = trust_dir / (STAGED_CERT + ".part")
    tmp.write_bytes(pem)
    tmp.rename(trust_dir / STAGED_CERT)
    log.step(f"secure boot: shipping {kp.cert} as {IMAGE_CERT} (qx-update checks release UKIs against it)")


def record(kp: KeyPair) -> dict[str, object]:
    """The manifest's ``secure_boot``: who signed this release (the certificate itself is public)."""
    from cryptography.hazmat.primitives import serialization

    c = _load_cert(kp.cert)
    der = c.public_bytes(serialization.Encoding.DER)
    return {"keys": "development" if kp.development else "given", "signed": True,
            "certificate_sha256": hashlib.sha256(der).hexdigest(), "subject": c.subject.rfc4514_string(),
            "not_after": c.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "certificate_pem": c.public_bytes(serialization.Encoding.PEM).decode()}
