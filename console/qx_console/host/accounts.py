"""Who may get in: root's password (``/etc/shadow`` through :mod:`qx_console.shadow`), SSH access and its
off-timer, SSH host key fingerprints, and qx-node's identity (its TLS certificate and API token, files
qx-node writes on its first start; paths from :mod:`qx_common.hostpaths`, shared with the node).

Invariants: sshd is started and stopped only through the systemd concern; the configuration is saved
after systemd did what it says (a failed start leaves the old setting on disk); the token is read only
on request and never logged. Lockdown mode is the lockdown file (``qx_common.hostpaths.lockdown_file``):
written before sshd is stopped (qx-node refuses host changes from that moment), and while it exists SSH
is neither started nor restarted from here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from qx_common import hostpaths
from qx_common.errors import EnvironmentError_, QxError
from qx_common.fs import atomic_write

from qx_console import shadow
from qx_console.backend import BackendUnavailable, NodeCert, ServiceState, check_ssh_enable
from qx_console.hostconfig import SshConfig, validate
from qx_console.host.context import HostContext
from qx_console.host.systemd import Systemd

# What qx-node writes on its first start (qx_common.hostpaths, the one definition the node uses too).
# Relative: the backend's root directory is put in front.
NODE_CERT = hostpaths.node_cert().relative_to("/")
NODE_TOKEN = hostpaths.node_token().relative_to("/")
SSH_HOST_KEYS = Path("var/lib/quantix/config/ssh/etc/ssh")
SSH_OFF_UNIT = "qx-ssh-off"


def read_node_cert(path: Path) -> NodeCert:
    """SHA-256 fingerprint (of the DER encoding, as ``openssl x509 -fingerprint -sha256``), names and
    expiry of the PEM certificate at ``path``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise BackendUnavailable(f"qx-node has not created its TLS certificate yet ({path} is missing)",
                          hint="qx-node creates it when it starts: check qx-node under Services") from None
    except OSError as e:
        raise EnvironmentError_(f"{path}: cannot read the node certificate: {e.strerror}") from e
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as e:
        raise EnvironmentError_(f"{path}: not a PEM certificate ({e})",
                                hint="remove it and restart qx-node to create a new one") from e
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        pass
    return NodeCert(sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(), names=tuple(names),
                    not_after=cert.not_valid_after_utc.strftime("%Y-%m-%d"))


def read_node_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        raise BackendUnavailable(f"qx-node has not created its API token yet ({path} is missing)",
                          hint="qx-node creates it when it starts: check qx-node under Services") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EnvironmentError_(f"{path}: cannot read the API token: {getattr(e, 'strerror', None) or e}") from e
    if not token:
        raise EnvironmentError_(f"{path}: the API token is empty",
                                hint="remove the file and restart qx-node to create a new token")
    return token


class Accounts:
    def __init__(self, ctx: HostContext, systemd: Systemd) -> None:
        self.ctx = ctx
        self.systemd = systemd

    # -- root's password -------------------------------------------------------------------------
    @property
    def shadow_file(self) -> Path:
        return self.ctx.path("etc/shadow")

    def verify_root_password(self, password: str) -> bool:
        return shadow.verify(self.shadow_file, "root", password)

    def set_root_password(self, password: str) -> None:
        shadow.set_password(self.shadow_file, "root", password)

    # -- SSH ---------------------------------------------------------------------------------------
    def set_ssh(self, enabled: bool, timeout_min: int) -> None:
        cfg, _ = self.ctx.load_config()
        new = replace(cfg, ssh=SshConfig(enabled=enabled, timeout_min=timeout_min))
        validate(new)
        if enabled:
            check_ssh_enable(self.ctx.lockdown_on())
            self.systemd.start("ssh.service")
            self.systemd.stop(f"{SSH_OFF_UNIT}.timer")
            if timeout_min:
                self.systemd.run_later(SSH_OFF_UNIT, timeout_min, ["systemctl", "stop", "ssh.service"])
        else:
            self.systemd.stop("ssh.service", f"{SSH_OFF_UNIT}.timer")
        self.ctx.store.save(new, "console", ("ssh",))

    def ssh_state(self) -> ServiceState:
        return self.systemd.unit_state("ssh")

    # -- lockdown mode -------------------------------------------------------------------------------
    def lockdown(self) -> bool:
        return self.ctx.lockdown_on()

    def set_lockdown(self, on: bool) -> None:
        cfg, _ = self.ctx.load_config()
        if on:
            # The file first: from this moment qx-node refuses host changes and SSH cannot be started.
            atomic_write(self.ctx.lockdown_file, "on: switched from the console\n", mode=0o644)
            self.systemd.stop("ssh.service", f"{SSH_OFF_UNIT}.timer")
        else:
            try:
                self.ctx.lockdown_file.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise EnvironmentError_(f"{self.ctx.lockdown_file}: cannot remove it: {e.strerror}") from e
        # The configuration says so too (the status screen's provenance); the file is what counts.
        self.ctx.store.save(replace(cfg, lockdown=on), "console", ("lockdown",))

    def ssh_fingerprints(self) -> list[str]:
        out = []
        d = self.ctx.path(SSH_HOST_KEYS)
        for pub in sorted(d.glob("ssh_host_*_key.pub")) if d.is_dir() else []:
            try:
                line = self.ctx.cmd(["ssh-keygen", "-l", "-f", str(pub)], timeout=10).stdout.strip()
            except QxError as e:
                line = f"{pub.name}: {e}"
            out.append(line)
        return out

    # -- qx-node's identity --------------------------------------------------------------------------
    def node_certificate(self) -> NodeCert:
        return read_node_cert(self.ctx.path(NODE_CERT))

    def node_api_token(self) -> str:
        return read_node_token(self.ctx.path(NODE_TOKEN))
