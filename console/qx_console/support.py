"""The support bundle: what a support engineer needs about a host, in one ``.tar.zst``, with no secret in it.

``qx-support-bundle`` (and Customize > Support Bundle, through the backend) call :func:`make_bundle`:

1. :func:`collect` gathers entries ``{name in the archive: bytes}``: logs (``journalctl`` through
   :func:`qx_common.run.run`), the configuration on the data partition, qx-node's certificate, versions
   (os-release, kernel, command line, boot entries), slot and update state (``qx-update status --json``)
   and a hardware inventory (``lsblk``, ``ip``, ``/proc``). A source that fails becomes a ``.error``
   entry saying why; it never stops the bundle.
2. :class:`Redactor` scrubs every entry: the host's own secrets by value (the node API token, every
   password hash of ``/etc/shadow``), and by pattern crypt hashes, PEM private keys, ``Bearer`` tokens
   and the values of keys named like a secret (password, token, secret, private key...).
3. The tar (sorted names, fixed metadata) is compressed with ``zstd`` in a temporary directory beside
   the target and renamed into ``/var/lib/quantix/support`` (:data:`qx_common.hostpaths.SUPPORT_DIR`):
   the bundle is there whole or not at all.
4. It is copied (atomically) to every mounted removable filesystem (:func:`removable_devices`: lsblk's
   RM/HOTPLUG/USB transport, or ``/sys/block/<disk>/removable``); removable devices that are not mounted
   are named in the result with how to mount them.

Invariants: files that hold nothing but secrets are never read (shadow, private keys, the API token
file); every byte that enters the archive passed the redactor; ``manifest.json`` lists every entry and
every left-out file with the reason.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qx_common import hostpaths, log
from qx_common.cli import entry
from qx_common.errors import EnvironmentError_, QxError, UserError
from qx_common.fs import atomic_copy
from qx_common.run import run, which
from qx_common.version import product_version

_log = log.get("console.support")

MAX_FILE = 1 << 20  # bytes of one configuration file taken (a support bundle is not a backup)
JOURNAL_LINES = 20000
REDACTED = "<redacted>"

# Files never read: they hold secrets and nothing else a support engineer needs.
# (qx-update's check-in token lives in the config directory as a bare value: any *token* / *secret* file.)
_SECRET_FILE = re.compile(r"(^|/)(shadow|gshadow|shadow-|gshadow-|[^/]*token[^/]*|[^/]*secret[^/]*|"
                          r"[^/]*key\.pem|[^/]*\.key|ssh_host_[a-z0-9]+_key)$")
_CRYPT = re.compile(r"\$(?:1|2[abxy]|5|6|7|y|gy|sha1|md5)\$[./A-Za-z0-9$=,]{8,}")
_PEM_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
_SECRET_KEY = re.compile(
    r"""(?ix)(["']?[a-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|private[_-]?key|_hash)["']?
            \s*[:=]\s*)("(?:[^"\\]|\\.)*"|'[^']*'|[^\s,}]+)""")


class Redactor:
    """Scrubs text: known secret values first (exact), then the patterns. ``secrets`` shorter than 8
    characters are ignored (they would blank ordinary words)."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def text(self, s: str) -> str:
        for secret in self.secrets:
            s = s.replace(secret, REDACTED)
        s = _PEM_KEY.sub(f"-----{REDACTED} PRIVATE KEY-----", s)
        s = _CRYPT.sub(REDACTED, s)
        s = _BEARER.sub(lambda m: m.group(1) + REDACTED, s)
        return _SECRET_KEY.sub(lambda m: m.group(1) + (f'"{REDACTED}"' if m.group(2)[:1] in "\"'" else REDACTED), s)

    def data(self, b: bytes) -> bytes:
        return self.text(b.decode("utf-8", errors="replace")).encode()


def host_secrets(root: Path) -> list[str]:
    """The secret values of this host, to be removed wherever they appear: the node API token and every
    password hash in /etc/shadow (read here, never put in the bundle)."""
    out: list[str] = []
    try:
        token = (root / hostpaths.node_token().relative_to("/")).read_text().strip()
        out.append(token)
    except (OSError, UnicodeDecodeError):
        pass
    try:
        for line in (root / "etc/shadow").read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 1 and fields[1] not in ("", "*", "!", "!!", "x"):
                out.append(fields[1].lstrip("!"))
    except (OSError, UnicodeDecodeError):
        pass
    return [s for s in out if s]


# -- collection ----------------------------------------------------------------------------------------

@dataclass
class Collected:
    entries: dict[str, bytes] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)  # path -> why


def _command(out: Collected, name: str, argv: list[str], timeout: float = 60) -> None:
    if which(argv[0]) is None:
        out.entries[name + ".error"] = f"'{argv[0]}' is not installed on this host\n".encode()
        return
    try:
        p = run(argv, check=False, timeout=timeout)
    except QxError as e:
        out.entries[name + ".error"] = f"{' '.join(argv)}: {e}\n".encode()
        return
    out.entries[name] = p.stdout.encode()
    if p.returncode != 0:
        out.entries[name + ".error"] = f"{' '.join(argv)}: exit {p.returncode}\n{p.stderr[-2000:]}".encode()


def _file(out: Collected, name: str, path: Path) -> None:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        out.entries[name + ".error"] = f"{path}: {e.strerror}\n".encode()
        return
    if len(data) > MAX_FILE:
        data = data[:MAX_FILE] + b"\n[... cut at 1 MiB]\n"
    out.entries[name] = data


def _tree(out: Collected, prefix: str, base: Path) -> None:
    if not base.is_dir():
        out.left_out[str(base)] = "not present"
        return
    for p in sorted(base.rglob("*")):
        rel = p.relative_to(base).as_posix()
        if p.is_symlink() or not p.is_file():
            continue
        if _SECRET_FILE.search(rel):
            out.left_out[f"{prefix}/{rel}"] = "holds a secret: not read"
            continue
        _file(out, f"{prefix}/{rel}", p)


def collect(root: Path, qx_update: list[str] | None = None) -> Collected:
    """Everything the bundle holds, unredacted (see the module docstring for what and why)."""
    out = Collected()
    under = (lambda p: root / Path(p).relative_to("/"))
    # versions, slot and update state
    version = product_version(root)
    entries = []
    for esp in ("efi", "boot", "boot/efi"):
        d = root / esp / "loader/entries"
        if d.is_dir():
            entries += [f"{esp}/loader/entries/{p.name}" for p in sorted(d.iterdir())]
    out.entries["versions.txt"] = (f"product version: {version}\n"
                                   f"bundle written: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
                                   "boot entries:\n" + "".join(f"  {e}\n" for e in entries)).encode()
    for name, rel in (("os-release", "usr/lib/os-release"), ("kernel.txt", "proc/version"),
                      ("cmdline.txt", "proc/cmdline")):
        _file(out, name, root / rel)
    _command(out, "update-status.json", [*(qx_update or ["qx-update"]), "status", "--json"])
    # logs
    jroot = [] if root == Path("/") else ["--root", str(root)]
    base = ["journalctl", "--no-pager", "-q", "-o", "short-iso", "-n", str(JOURNAL_LINES), *jroot]
    for name, extra in (("logs/journal.txt", ["-b"]), ("logs/kernel.txt", ["-k"]),
                        ("logs/qx-node.txt", ["-u", "qx-node.service"]), ("logs/qx-update.txt", ["-u", "qx-update*"]),
                        ("logs/qx-console.txt", ["-u", "qx-console*"])):
        _command(out, name, base + extra)
    # configuration and the node's public identity
    _tree(out, "config", under(hostpaths.CONFIG_DIR))
    _tree(out, "node", under(hostpaths.NODE_STATE_DIR))
    # hardware
    _command(out, "hardware/lsblk.json", ["lsblk", "-J", "-b", "-o",
                                          "NAME,PATH,SIZE,TYPE,MODEL,SERIAL,TRAN,RM,FSTYPE,LABEL,MOUNTPOINT"])
    _command(out, "hardware/ip-addr.json", ["ip", "-j", "addr", "show"])
    for name, rel in (("hardware/cpuinfo.txt", "proc/cpuinfo"), ("hardware/meminfo.txt", "proc/meminfo")):
        _file(out, name, root / rel)
    if which("lspci"):
        _command(out, "hardware/lspci.txt", ["lspci", "-nn"])
    return out


# -- archive ----------------------------------------------------------------------------------------------

def build_tar(entries: dict[str, bytes], top: str) -> bytes:
    """A tar of ``entries`` under ``top/`` (sorted, fixed owner and mode: the same input, the same tar)."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            data = entries[name]
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime, info.uname, info.gname = len(data), 0o644, now, "root", "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass(frozen=True)
class Removable:
    device: str  # /dev/sdb1
    mountpoint: str  # "" when not mounted
    label: str = ""


def removable_devices(lsblk: dict[str, Any], sys_block: Path = Path("/sys/block")) -> list[Removable]:
    """Filesystems on removable disks (USB sticks) from ``lsblk -J -o NAME,PATH,RM,HOTPLUG,TRAN,TYPE,
    FSTYPE,LABEL,MOUNTPOINT``: a disk counts when lsblk says RM or HOTPLUG or transport usb, or when
    ``<sys_block>/<disk>/removable`` is 1. Its partitions, or the disk itself when it holds a filesystem
    or is mounted, are returned."""
    out: list[Removable] = []

    def flag(v: Any) -> bool:
        return v is True or str(v).lower() in ("1", "true")

    for disk in lsblk.get("blockdevices") or []:
        name = str(disk.get("name", ""))
        sysflag = ""
        try:
            sysflag = (sys_block / name / "removable").read_text().strip()
        except OSError:
            pass
        if not (flag(disk.get("rm")) or flag(disk.get("hotplug")) or disk.get("tran") == "usb" or sysflag == "1"):
            continue
        for part in [disk, *(disk.get("children") or [])]:
            # Without udev lsblk knows no FSTYPE: a mounted device or a partition counts as well.
            if part.get("fstype") or part.get("mountpoint") or part.get("type") == "part":
                out.append(Removable(str(part.get("path") or f"/dev/{part.get('name')}"),
                                     str(part.get("mountpoint") or ""), str(part.get("label") or "")))
    return out


def list_removable(sys_block: Path = Path("/sys/block")) -> list[Removable]:
    try:
        p = run(["lsblk", "-J", "-o", "NAME,PATH,RM,HOTPLUG,TRAN,TYPE,FSTYPE,LABEL,MOUNTPOINT"], timeout=20)
        return removable_devices(json.loads(p.stdout or "{}"), sys_block)
    except (QxError, ValueError) as e:
        _log.warning("removable devices not listed: %s", e)
        return []


@dataclass(frozen=True)
class BundleResult:
    path: Path
    size: int
    copies: tuple[Path, ...] = ()
    not_mounted: tuple[str, ...] = ()  # removable devices found without a mounted filesystem
    copy_errors: tuple[str, ...] = ()

    def summary(self) -> str:
        lines = [f"Support bundle: {self.path} ({self.size} bytes)"]
        lines += [f"Copied to {c}" for c in self.copies]
        lines += [f"USB device {d} is not mounted: mount it (e.g. mount {d} /mnt) and create the bundle again"
                  for d in self.not_mounted]
        lines += [f"Not copied: {e}" for e in self.copy_errors]
        if not self.copies and not self.not_mounted:
            lines.append("No USB stick found: copy the file with scp, or insert a stick and create it again.")
        return "\n".join(lines)


def make_bundle(root: Path = Path("/"), out_dir: Path | None = None, *, usb: bool = True,
                sys_block: Path | None = None, qx_update: list[str] | None = None,
                removable: Callable[[], list[Removable]] | None = None) -> BundleResult:
    """Collect, redact, archive and write the bundle (see the module docstring); returns where it went."""
    if which("zstd") is None:
        raise EnvironmentError_("'zstd' is not installed on this host", hint="install zstd")
    out_dir = Path(out_dir) if out_dir else root / hostpaths.SUPPORT_DIR.relative_to("/")
    host = socket.gethostname()
    try:
        host = (root / "proc/sys/kernel/hostname").read_text().strip() or host
    except OSError:
        pass
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    top = f"qx-support-{re.sub(r'[^A-Za-z0-9.-]', '_', host)}-{stamp}"
    got = collect(root, qx_update)
    red = Redactor(host_secrets(root))
    entries = {name: red.data(data) for name, data in got.entries.items()}
    entries["manifest.json"] = json.dumps({
        "entries": {n: len(d) for n, d in sorted(entries.items())},
        "left_out": got.left_out,
        "redaction": "node API token and password hashes by value; crypt hashes, PEM private keys, bearer "
                     "tokens and values of secret-named keys by pattern",
    }, indent=2, sort_keys=True).encode()
    tar = build_tar(entries, top)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentError_(f"{out_dir}: cannot create the bundle directory: {e.strerror}") from e
    target = out_dir / f"{top}.tar.zst"
    # Temp files beside the target (same filesystem), renamed into place only when complete.
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".qx-support-") as tmp:
        raw = Path(tmp) / "bundle.tar"
        raw.write_bytes(tar)
        packed = Path(tmp) / "bundle.tar.zst"
        run(["zstd", "-q", "-10", "-o", str(packed), str(raw)], timeout=300)
        os.chmod(packed, 0o600)
        with packed.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(packed, target)
        dfd = os.open(out_dir, os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    size = target.stat().st_size
    copies: list[Path] = []
    not_mounted: list[str] = []
    errors: list[str] = []
    if usb:
        devices = removable() if removable else list_removable(sys_block or root / "sys/block")
        for dev in devices:
            if not dev.mountpoint:
                not_mounted.append(dev.device)
                continue
            dst = Path(dev.mountpoint) / target.name
            try:
                atomic_copy(target, dst, mode=0o600)
                copies.append(dst)
            except OSError as e:
                errors.append(f"{dev.device} at {dev.mountpoint}: {e.strerror}")
    _log.info("support bundle %s written (%d bytes, %d copies)", target, size, len(copies))
    return BundleResult(target, size, tuple(copies), tuple(not_mounted), tuple(errors))


def read_bundle(path: Path) -> Iterator[tuple[str, bytes]]:
    """The members of a bundle (for tests and for checking one by hand): ``(name, data)``."""
    with tempfile.TemporaryDirectory(prefix="qx-support-read-") as tmp:
        raw = Path(tmp) / "b.tar"
        run(["zstd", "-q", "-d", "-o", str(raw), str(path)], timeout=300)
        with tarfile.open(raw) as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m)
                if f is not None:
                    yield m.name, f.read()


def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="qx-support-bundle",
        description="Write a support bundle (logs, configuration with secrets redacted, versions, slot and "
                    "update state, hardware) as one .tar.zst under /var/lib/quantix/support, and copy it to a "
                    "mounted USB stick.")
    p.add_argument("--root", type=Path, default=Path("/"), help="the host's root directory (default /)")
    p.add_argument("--out", type=Path, default=None, help="directory to write to (default: the data partition's "
                                                          "/var/lib/quantix/support)")
    p.add_argument("--no-usb", action="store_true", help="do not copy the bundle to removable devices")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    if not args.root.is_dir():
        raise UserError(f"--root: '{args.root}' is not a directory", hint="give the host's root directory")
    res = make_bundle(args.root, args.out, usb=not args.no_usb)
    print(res.summary())
    return 0


main = entry(_main)
