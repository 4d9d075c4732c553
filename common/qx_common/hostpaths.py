"""The host's well-known files — one definition for every package that reads or writes them.

qx-node creates its identity on first start (``api-token``, 0600, and ``tls/{key,cert}.pem`` under its
state directory); the console shows the certificate's fingerprint and the token; qx-update's health gate
trusts that certificate; every console writes ``<tty>.ready`` under :data:`CONSOLE_READY_DIR` for
qx-node's health. Paths are absolute on a host; tests and the console's ``--root`` put a prefix in front
(the console's ``HostContext.path``).
"""

from __future__ import annotations

from pathlib import Path

NODE_STATE_DIR = Path("/var/lib/quantix/node")
NODE_TOKEN_NAME = "api-token"
NODE_TLS_DIR_NAME = "tls"
NODE_CERT_NAME = "cert.pem"
NODE_KEY_NAME = "key.pem"
CONSOLE_READY_DIR = Path("/run/quantix/console")
CONFIG_DIR = Path("/var/lib/quantix/config")
# Lockdown mode is on while this file exists (the console writes and removes it, with the root password):
# sshd is stopped and not started, and qx-node refuses its host-configuration routes (423).
LOCKDOWN_NAME = "lockdown"
# Support bundles (qx-support-bundle, the console's Support Bundle) are written here, on the data partition.
SUPPORT_DIR = Path("/var/lib/quantix/support")
# UEFI variables (efivarfs): qx-update reads SecureBoot-<EFI global GUID> there (qx_update.secureboot).
EFIVARS_DIR = Path("/sys/firmware/efi/efivars")
# The certificate the image's boot chain was signed with (the build's SB_CERT, or its development pair;
# installed by image/scripts/postinst.chroot): with Secure Boot on, qx-update installs only UKIs it verifies.
SECURE_BOOT_CERT = Path("/usr/share/quantix/secureboot/db.crt")


def node_token(state_dir: Path = NODE_STATE_DIR) -> Path:
    return state_dir / NODE_TOKEN_NAME


def node_tls_dir(state_dir: Path = NODE_STATE_DIR) -> Path:
    return state_dir / NODE_TLS_DIR_NAME


def node_cert(state_dir: Path = NODE_STATE_DIR) -> Path:
    return node_tls_dir(state_dir) / NODE_CERT_NAME


def lockdown_file(config_dir: Path = CONFIG_DIR) -> Path:
    return config_dir / LOCKDOWN_NAME
