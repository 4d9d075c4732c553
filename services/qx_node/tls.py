"""The node's TLS identity: a self-signed certificate created on first start.

``ensure_cert(tls_dir)`` returns ``(key_path, cert_path)``, creating ``key.pem`` (0600) and
``cert.pem`` (0644) when missing, or when the certificate no longer names this host (the hostname
changed). The certificate is its own CA: local clients verify against ``cert.pem``. SANs:
``127.0.0.1``, ``::1``, ``localhost`` and the hostname. ECDSA P-256, valid 10 years.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qx_common import hostpaths
from qx_common.errors import EnvironmentError_
from qx_common.fs import atomic_write


def _names() -> tuple[list[str], list[str]]:
    host = socket.gethostname() or "localhost"
    dns = sorted({"localhost", host})
    return dns, ["127.0.0.1", "::1"]


def _covers(cert_path: Path, dns: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    have = set(san.get_values_for_type(x509.DNSName))
    return set(dns) <= have and cert.not_valid_after_utc > dt.datetime.now(dt.timezone.utc)


def ensure_cert(tls_dir: Path) -> tuple[Path, Path]:
    key_path, cert_path = tls_dir / hostpaths.NODE_KEY_NAME, tls_dir / hostpaths.NODE_CERT_NAME
    dns, ips = _names()
    if key_path.exists() and _covers(cert_path, dns):
        return key_path, cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[-1] if dns[-1] != "localhost" else dns[0]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Quantix OS node")])
    now = dt.datetime.now(dt.timezone.utc)
    san = x509.SubjectAlternativeName([x509.DNSName(d) for d in dns]
                                      + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    try:
        atomic_write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()), 0o600)
        atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as e:
        raise EnvironmentError_(f"cannot write the TLS key and certificate under {tls_dir}: {e.strerror}",
                                hint="qx-node needs a writable --state-dir") from e
    return key_path, cert_path
