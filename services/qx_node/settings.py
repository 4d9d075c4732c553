"""Settings of one qx-node process, validated once at start-up.

Files under ``state_dir``: ``api-token`` (0600) and ``tls/{key,cert}.pem``, created on first start.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from qx_common import hostpaths
from qx_common.errors import EnvironmentError_, UserError
from qx_common.version import IMAGE_ID, os_release

DEFAULT_LISTEN = "0.0.0.0:8443"
DEFAULT_LIBVIRT_URI = "qemu:///system"
DEFAULT_STATE_DIR = hostpaths.NODE_STATE_DIR
DEFAULT_CONSOLE_READY_DIR = hostpaths.CONSOLE_READY_DIR
DEFAULT_POOL_DIR = Path("/var/lib/libvirt/images")
DEFAULT_POOL_NAME = "default"
# Host facts are read from these; tests point them at files of their own.
DEFAULT_PROC_CMDLINE = Path("/proc/cmdline")
DEFAULT_PROC_CPUINFO = Path("/proc/cpuinfo")
DEFAULT_KVM_DEVICE = Path("/dev/kvm")
# A verity boot names its slot by the root hash: the partition udev links under this GPT UUID (qx_common.slot).
DEFAULT_BY_PARTUUID = Path("/dev/disk/by-partuuid")
DEFAULT_SYS_CLASS_BLOCK = Path("/sys/class/block")


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    libvirt_uri: str
    state_dir: Path
    console_ready_dir: Path | None
    pool_dir: Path = DEFAULT_POOL_DIR
    pool_name: str = DEFAULT_POOL_NAME
    virt_type: str | None = None  # None: kvm when the host offers it, else qemu (TCG)
    proc_cmdline: Path = DEFAULT_PROC_CMDLINE  # root=PARTLABEL=root-a|b or roothash=: the running A/B slot
    by_partuuid: Path = DEFAULT_BY_PARTUUID    # ... for roothash=: the data partition's link and its GPT name
    sys_class_block: Path = DEFAULT_SYS_CLASS_BLOCK
    proc_cpuinfo: Path = DEFAULT_PROC_CPUINFO  # CPU model and the vmx/svm flags
    kvm_device: Path = DEFAULT_KVM_DEVICE
    # The host's interfaces (bridges, VLANs) for /v1/networks; tests read another network namespace's.
    net_dir: Path = Path("/sys/class/net")
    vlan_config: Path = Path("/proc/net/vlan/config")
    # How a VLAN network's host side is made (``POST /v1/networks {"vlan"}``): the console's program,
    # the one home of host networking (qx_console.vmnet: networkd files with safe apply); run, not imported.
    # It gets "add|remove VID" appended. Tests add --root DIR --files-only.
    host_vlan_cmd: tuple[str, ...] = (sys.executable, "-m", "qx_console.vmnet")
    # The host's A/B updates (/v1/host/updates): qx-update's own command, run (never imported as a workflow);
    # "--json VERB" is appended. Tests give it ("python", "-m", "qx_update", "--config", FILE).
    update_cmd: tuple[str, ...] = ("qx-update",)
    # Seconds between two samples of the host's rates kept for the dashboard's charts (the last hour).
    history_interval: float = 5.0
    libvirt_connect_timeout: float = 10.0  # a libvirtd that accepts and never answers is reported after this
    # Why the console is not checked (console_ready_dir None), for /health's detail.
    console_unchecked_reason: str = "--no-console-check"

    @property
    def token_path(self) -> Path:
        return hostpaths.node_token(self.state_dir)

    @property
    def tls_dir(self) -> Path:
        return hostpaths.node_tls_dir(self.state_dir)


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise UserError(f"--listen: '{value}' is not ADDR:PORT", hint="for example --listen 127.0.0.1:8443")
    host = host.strip("[]")
    try:
        port_no = int(port)
    except ValueError:
        raise UserError(f"--listen: port '{port}' is not a number", hint="use a port from 1 to 65535") from None
    if not 1 <= port_no <= 65535:
        raise UserError(f"--listen: port {port_no} is out of range", hint="use a port from 1 to 65535")
    return host, port_no


def console_check(ready_dir: Path | None, disabled: bool, root: Path = Path("/")) -> tuple[Path | None, str]:
    """(directory to check, reason when not checked). The console only exists on a Quantix OS host
    (os-release ``IMAGE_ID=quantix-os``): elsewhere — a development machine running the README's
    ``qx-node serve`` — it is not required unless ``--console-ready-dir`` asks for it."""
    if disabled:
        return None, "--no-console-check"
    if ready_dir is not None:
        return ready_dir, ""
    if os_release(root).get("IMAGE_ID") == IMAGE_ID:
        return DEFAULT_CONSOLE_READY_DIR, ""
    return None, "not a Quantix OS host; --console-ready-dir DIR checks it"


def prepare_dir(flag: str, path: Path) -> Path:
    """Create the directory ``path`` given by ``flag`` (if missing); an error names the flag."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{flag}: {path} is not a directory",
                        hint=f"point {flag} at a directory, or at a path to create") from None
    except OSError as e:
        raise EnvironmentError_(f"{flag}: cannot create {path}: {e.strerror}",
                                hint=f"qx-node needs a writable {flag}") from e
    return path
