"""TLS for ``qx-update-server serve``: the operator's certificate, or a self-signed one made on first start.

``--tls-cert/--tls-key`` serve HTTPS with the operator's PEM files. ``--tls-self-signed`` instead uses
``<data-dir>/tls/{cert,key}.pem``, creating them on the first start (ECDSA P-256, valid 10 years, the
listen addresses and ``localhost`` as subject alternative names) and printing the certificate's
SHA-256 fingerprint, which clients pin or compare. The key file is written 0600 before the certificate,
so a crash leaves no certificate without its key.

TUF already protects what hosts download (signatures, not the transport); TLS keeps tokens, check-ins
and the admin page private.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from qx_common.errors import UserError
from qx_common.fs import atomic_write


def check_pair(cert: Path, key: Path) -> tuple[str, str]:
    """Both files exist and belong together (loaded as the server will), else a :class:`UserError`."""
    for flag, f in (("--tls-cert", cert), ("--tls-key", key)):
        if not f.is_file():
            raise UserError(f"{flag} {f}: no such file", hint="give PEM files")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as e:
        raise UserError(f"--tls-cert/--tls-key: cannot load them: {e}",
                        hint="the certificate and the key must be PEM files that belong together") from e
    return str(cert), str(key)


def fingerprint(cert_pem: bytes) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return ":".join(f"{b:02X}" for b in digest)


def self_signed(directory: Path, hosts: list[str]) -> tuple[Path, Path, str, bool]:
    """``directory``/{cert,key}.pem, created if missing; returns (cert, key, SHA-256 fingerprint, created)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    created = False
    if not (cert.is_file() and key.is_file()):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        pk = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = [x509.DNSName("localhost")]
        for h in dict.fromkeys(hosts):
            try:
                ip = ipaddress.ip_address(h)
                if not ip.is_unspecified:
                    names.append(x509.IPAddress(ip))
            except ValueError:
                names.append(x509.DNSName(h))
        now = dt.datetime.now(dt.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qx-update-server")])
        crt = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pk.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=3650))
               .add_extension(x509.SubjectAlternativeName(names), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .sign(pk, hashes.SHA256()))
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        atomic_write(key, pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), mode=0o600)
        atomic_write(cert, crt.public_bytes(serialization.Encoding.PEM))
        created = True
    check_pair(cert, key)
    return cert, key, fingerprint(cert.read_bytes()), created
