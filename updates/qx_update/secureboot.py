"""Secure Boot as qx-update sees it: is the running host enforcing it, and would its firmware boot a release's UKI.

A host that booted with Secure Boot on boots only UKIs signed with a key its firmware's ``db`` trusts.
Installing a release whose UKI is unsigned, or signed with another key, would switch the host to a
boot entry its firmware refuses (docs/secure-boot.md). So ``qx-update apply`` checks the UKI first —
after it is downloaded or assembled from chunks and proven by TUF, before anything is written to the
slot or the ESP (:meth:`qx_update.client.Client._apply`) — and refuses such a release as a
:class:`~qx_update.errors.VerificationError` naming the signer, the trusted certificate and the fix.

* :func:`state` — ``"enabled"``/``"disabled"``/``"no-uefi"`` from the EFI global variable
  ``SecureBoot-8be4df61-…`` under efivarfs (:data:`qx_common.hostpaths.EFIVARS_DIR`): 4 attribute
  bytes, then one data byte, 1 = on. A variable of another length is refused, not guessed.
* :func:`check_uki` — with Secure Boot on, ``sbverify --cert CERT UKI`` (sbsigntool: the same
  Authenticode check, chain to the certificate included, that ``make image`` runs before publishing)
  against the certificate the running image was signed with (:data:`qx_common.hostpaths.SECURE_BOOT_CERT`,
  shipped by the build). With Secure Boot off the release is accepted, and the result says it was not
  checked (``apply`` logs it).

Invariant: with Secure Boot on, no UKI reaches the ESP unless sbverify accepted it against the host's
certificate. Both paths are the config's ``efivars_dir``/``secure_boot_cert`` (not host-overridable:
the override file sits on the writable data partition), so tests point them at a fake host.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qx_common import log
from qx_common import run as r
from qx_common.errors import EnvironmentError_, ExternalError
from qx_update.errors import VerificationError

EFI_GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
SECURE_BOOT_VAR = f"SecureBoot-{EFI_GLOBAL_GUID}"
_WIN_CERT_PKCS_SIGNED_DATA = 0x0002

State = Literal["enabled", "disabled", "no-uefi"]


def state(efivars_dir: Path) -> State:
    """Whether the running host booted with Secure Boot on (read from efivarfs, as bootctl does)."""
    if not efivars_dir.is_dir():
        return "no-uefi"   # booted by a BIOS (or CSM): there is no Secure Boot
    var = efivars_dir / SECURE_BOOT_VAR
    try:
        data = var.read_bytes()
    except FileNotFoundError:
        return "disabled"  # UEFI firmware without Secure Boot support sets no such variable
    except OSError as e:
        raise EnvironmentError_(f"{var}: cannot read: {e.strerror or e}",
                                hint="qx-update runs as root; check that efivarfs is mounted") from e
    if len(data) != 5:
        # Not what UEFI defines (attributes + one byte): refuse to guess whether the host enforces.
        raise EnvironmentError_(f"{var}: {len(data)} bytes, not the 4 attribute bytes and 1 data byte UEFI defines",
                                hint="check the firmware or the efivarfs mount at /sys/firmware/efi/efivars")
    return "enabled" if data[4] == 1 else "disabled"


def load_certificate(cert: Path):  # noqa: ANN201 - cryptography's x509.Certificate
    """The host's trusted certificate (PEM X.509); an unreadable one is the host's fault, not the release's."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as e:
        raise EnvironmentError_(f"{cert}: not a readable PEM X.509 certificate ({e})",
                                hint="the image ships the certificate it was signed with there; reinstall or "
                                     "upgrade from an ISO of this release line (docs/secure-boot.md)") from e


def subject(c) -> str:  # noqa: ANN001 - cryptography's x509.Certificate
    """RFC 4514 (``CN=…``), as the release manifest's ``secure_boot.subject``."""
    return str(c.subject.rfc4514_string())


def signer_certificates(uki: Path) -> list:  # type: ignore[type-arg]
    """The certificates in the PE file's Authenticode signatures ([] when it has none).

    For the error message only: whether the UKI verifies is sbverify's answer, never this one."""
    from cryptography.hazmat.primitives.serialization import pkcs7

    with uki.open("rb") as f:   # the headers, then the table at the end: not the whole (50 MB) UKI
        start, stop = _cert_table(f.read(4096), size=uki.stat().st_size)
        f.seek(start)
        data = f.read(min(stop - start, 1 << 20))
    out: list = []  # type: ignore[type-arg]
    pos, end = 0, len(data)
    while pos + 8 <= end:
        length, _rev, kind = struct.unpack_from("<IHH", data, pos)
        if length < 8:
            break
        if kind == _WIN_CERT_PKCS_SIGNED_DATA:
            der = data[pos + 8: pos + length]
            der = der[:_der_length(der)]  # sbsign pads the entry to 8 bytes
            try:
                out += [c for c in pkcs7.load_der_pkcs7_certificates(der) if c not in out]
            except ValueError:
                pass  # an unreadable signature: sbverify refuses it, the message says "unsigned or unreadable"
        pos += (length + 7) & ~7
    return out


def _cert_table(data: bytes, *, size: int) -> tuple[int, int]:
    """(start, end) of the PE certificate table (the security data directory) of a file of ``size`` bytes
    whose headers are ``data``; (0, 0) when there is none."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        return 0, 0
    (pe_off,) = struct.unpack_from("<I", data, 0x3C)
    opt = pe_off + 24
    if len(data) < opt + 2 or data[pe_off:pe_off + 4] != b"PE\0\0":
        return 0, 0
    (magic,) = struct.unpack_from("<H", data, opt)
    sec_dir = opt + (112 if magic == 0x20B else 96) + 4 * 8
    if len(data) < sec_dir + 8:
        return 0, 0
    off, length = struct.unpack_from("<II", data, sec_dir)
    if not length or off + length > size:
        return 0, 0
    return off, off + length


def _der_length(der: bytes) -> int:
    """Total length of the DER element at the start of ``der`` (tag, length, content)."""
    if len(der) < 2:
        return len(der)
    first = der[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    return 2 + n + int.from_bytes(der[2:2 + n], "big")


# What sbverify prints (exit 1) when it checked the UKI and the signature does not verify against the
# certificate: unsigned, another signer or changed after signing alike. Any other failure is no verdict.
SBVERIFY_VERDICT = "Signature verification failed"


class UkiRefused(VerificationError):
    """Secure Boot is on and the release's UKI does not verify against the host's certificate: a fact
    about that signed release on this host (qx-update records it as refused until ``allow``). ``reason``
    is the short clause for ``status`` and ``check``."""

    def __init__(self, message: str, *, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason


@dataclass(frozen=True)
class UkiCheck:
    secure_boot: State
    verified: bool     # sbverify accepted it against the host's certificate (False: not checked, SB off)
    note: str          # one sentence for the log and the apply result


def uki_cmdline(uki: Path) -> str | None:
    """The UKI's own kernel command line (its ``.cmdline`` section), None when it has none or its PE
    headers cannot be read (the caller has proven the file's signature or hash already)."""
    with uki.open("rb") as f:
        head = f.read(8192)   # DOS, PE and optional headers and the section table
        try:
            if head[:2] != b"MZ":
                return None
            (pe_off,) = struct.unpack_from("<I", head, 0x3C)
            if head[pe_off:pe_off + 4] != b"PE\0\0":
                return None
            (count,) = struct.unpack_from("<H", head, pe_off + 6)
            (opt_size,) = struct.unpack_from("<H", head, pe_off + 20)
            table = pe_off + 24 + opt_size
            for i in range(count):
                entry = table + 40 * i
                if head[entry:entry + 8].rstrip(b"\0") != b".cmdline":
                    continue
                virtual_size, _addr, raw_size, raw_ptr = struct.unpack_from("<IIII", head, entry + 8)
                f.seek(raw_ptr)
                data = f.read(min(virtual_size or raw_size, raw_size, 1 << 16))
                return data.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        except struct.error:
            return None
    return None


def pinned_root(cmdline: str | None) -> str | None:
    """The GPT partition label a command line's ``root=PARTLABEL=…`` names (the last ``root=`` wins, as
    for the kernel and systemd), or None when it names none that way — a verity release's
    ``root=/dev/mapper/root`` pins no slot: its ``roothash=`` picks the partitions (:mod:`qx_common.verity`)."""
    roots = [w.removeprefix("root=") for w in (cmdline or "").split() if w.startswith("root=")]
    return roots[-1].removeprefix("PARTLABEL=") if roots and roots[-1].startswith("PARTLABEL=") else None


def check_uki(uki: Path, *, version: str, efivars_dir: Path, cert: Path, target_root: str | None = None) -> UkiCheck:
    """Refuse (VerificationError) release ``version``'s UKI if the host enforces Secure Boot and the
    UKI does not verify against ``cert``; else say what was (not) checked.

    ``target_root``: the partition label of the slot the release goes to. With Secure Boot on,
    systemd-stub ignores the boot entry's options, so the UKI's own command line picks the root: a UKI
    whose signed ``root=PARTLABEL=`` names another slot would boot the new kernel on the old root (and
    qx-update would write that slot again on every run). Such a release is refused (:class:`UkiRefused`).
    A dm-verity release is never refused for this: its ``root=/dev/mapper/root`` pins no slot, its root
    is the slot sealed for its ``roothash=`` (:mod:`qx_update.seal`), whichever that is (one that mixes
    ``roothash=`` with ``root=PARTLABEL=`` is refused by :func:`qx_update.slotinstall.verity_roothash`)."""
    sb = state(efivars_dir)
    if sb != "enabled":
        why = "Secure Boot is off on this host" if sb == "disabled" else "this host did not boot by UEFI"
        note = f"{why}: the signature of {version}'s UKI was not checked"
        log.step(note)
        return UkiCheck(sb, False, note)
    if not cert.is_file():
        raise EnvironmentError_(
            f"this host booted with Secure Boot on, but has no certificate to check {version}'s UKI against "
            f"({cert} is missing)",
            hint="the image ships the certificate it was signed with there; reinstall or upgrade from an ISO "
                 "built by this release line (docs/secure-boot.md)")
    trusted = load_certificate(cert)
    res = r.run(["sbverify", "--cert", str(cert), str(uki)], check=False)
    if res.returncode == 0:
        pinned = pinned_root(uki_cmdline(uki))
        if target_root is not None and pinned is not None and pinned != target_root:
            raise UkiRefused(
                f"release {version}: under Secure Boot its UKI boots only the root its signed command line "
                f"names (root=PARTLABEL={pinned}), not {target_root}, the slot it would be written to: the new "
                f"kernel would start on the old root; nothing was installed",
                hint="on a Secure Boot host, install this release from its ISO (reinstall, keep-data: the "
                     "installer writes slot A); releases that pick their root by dm-verity lift this "
                     "(docs/secure-boot.md)",
                reason=f"under Secure Boot its UKI boots {pinned} only, not {target_root}")
        note = f"{version}'s UKI is signed by the certificate this host trusts ({subject(trusted)})"
        log.step(note)
        return UkiCheck(sb, True, note)
    # sbverify's first line says what failed ("Hash doesn't match image"); the rest is hex digests.
    detail = next((ln.strip() for ln in (res.stderr + res.stdout).splitlines() if ln.strip()), "failed")
    if res.returncode != 1 or SBVERIFY_VERDICT not in res.stdout + res.stderr:
        # Killed, out of memory, an unreadable file: no verdict on the release. Nothing is installed and
        # nothing is recorded against it; the next run checks it again.
        raise ExternalError(
            f"release {version}: sbverify gave no verdict on its UKI (exit {res.returncode}: {detail}); "
            f"nothing was installed", hint="run the update again; if it persists, check free memory and /var")
    signers = signer_certificates(uki)
    fix = (f"publish releases whose UKI is signed with the key of {subject(trusted)} (make image SB_KEY=… "
           f"SB_CERT=…), or enroll the other certificate in this host's firmware db and boot an image that "
           f"ships it (docs/secure-boot.md)")
    if not signers:
        raise UkiRefused(
            f"release {version}: its UKI ({uki.name}) is not signed (or its signature is unreadable), and this "
            f"host booted with Secure Boot on: its firmware would refuse to boot it; the host trusts "
            f"{subject(trusted)} ({cert}); nothing was installed", hint=fix,
            reason=f"not signed; this host trusts {subject(trusted)}")
    if any(c == trusted or c.issuer == trusted.subject for c in signers):
        raise UkiRefused(
            f"release {version}: its UKI ({uki.name}) is signed by {', '.join(subject(c) for c in signers)} "
            f"(the host's certificate {subject(trusted)}, or one it issued), but the signature does not verify "
            f"(the file changed after signing; sbverify: {detail}); nothing was installed",
            hint="publish the release again from the build's own signed UKI; never edit a signed UKI",
            reason=f"its signature does not verify: the file changed after signing ({detail})")
    raise UkiRefused(
        f"release {version}: its UKI ({uki.name}) is signed by {', '.join(subject(c) for c in signers)}, but "
        f"this host booted with Secure Boot on and trusts {subject(trusted)} ({cert}): its firmware would "
        f"refuse it; nothing was installed", hint=fix,
        reason=f"signed by {', '.join(subject(c) for c in signers)}; this host trusts {subject(trusted)}")


def status(efivars_dir: Path, cert: Path) -> tuple[State | Literal["unknown"], bool, str]:
    """(state, whether apply checks UKIs, one sentence) for ``qx-update status``: reads the variable and
    whether the certificate exists, nothing more (status runs at boot; the certificate is parsed by apply)."""
    try:
        sb = state(efivars_dir)
    except EnvironmentError_ as e:
        return "unknown", True, f"cannot tell whether Secure Boot is on ({e.message}): apply refuses releases"
    if sb != "enabled":
        why = "off" if sb == "disabled" else "not available (the host did not boot by UEFI)"
        return sb, False, f"Secure Boot is {why}: release UKIs are installed without a signature check"
    if not cert.is_file():
        return sb, True, f"Secure Boot is on but {cert} is missing: apply refuses every release"
    return sb, True, f"Secure Boot is on: apply installs only UKIs that verify against {cert}"
