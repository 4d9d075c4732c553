"""Test releases derived from the one ``make image`` built, for the OTA e2e test.

A real update needs a second (and third) release of the OS. Building the image again per version
would cost ~6 minutes each, so the test derives them from the built root filesystem instead: the
built erofs root is unpacked once, then for each derived version the tree gets

* its version in ``/usr/lib/os-release`` (what the booted host reports as its version),
* the update trust anchor of the test's update server (``/usr/lib/quantix/tuf-root.json``),
* the test agent (``tests/e2e/agent.py``, run after each boot; see there) and the console probe it
  runs once (``tests/e2e/console_probe.py``),
* optionally units masked — the "bad release" whose health gate fails,

and is packed with ``mkfs.erofs`` and ``zstd`` into a release directory exactly as ``make image``
lays one out (root payload, UKI, manifest, SHA256SUMS), which ``qx-release publish`` accepts. The UKI
is the built one sealed for the derived root, as the build seals its own (:mod:`qx_build.sealing`):
its command line carries the derived root's dm-verity root hash, signed again with the build's Secure
Boot key. Everything else — kernel, initrd, systemd, libvirt, our code — is the built image's.

Needs root (loop mount of the erofs root).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from qx_build import artifacts, esp, gpt, sealing, secureboot
from qx_build.paths import REPO, Release, read_mkosi_setting
from qx_common import verity

HERE = Path(__file__).resolve().parent
AGENT_UNIT = """\
[Unit]
Description=Quantix OS e2e test agent (test releases only)
After=boot-complete.target qx-health-gate.service systemd-bless-boot.service qx-update-blessed.service
After=network-online.target
Wants=network-online.target
RequiresMountsFor=/var/lib

[Service]
Type=exec
ExecStart=/usr/bin/python3 /usr/local/lib/qx-e2e/agent.py

[Install]
WantedBy=multi-user.target
"""


def _run(*argv: str | Path) -> None:
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, argv))} failed ({p.returncode}): {p.stderr.strip()[-1500:]}")


def bump(version: str, by: int) -> str:
    """``0.1.0`` → ``0.1.<0+by>`` (a release newer than the built one, whatever VERSION says)."""
    m = re.match(r"^(\d+)\.(\d+)\.(\d+)", version)
    assert m, version
    return f"{m.group(1)}.{m.group(2)}.{int(m.group(3)) + by}"


@dataclass(frozen=True)
class Derived:
    version: str
    release_dir: Path  # what qx-release publishes
    erofs: Path        # the uncompressed root filesystem (what the slot holds)
    tree: verity.Tree  # its dm-verity hash tree (what the slot's verity partition holds)
    uki: Path          # the UKI sealed with tree.roothash
    cmdline: str       # that UKI's command line


class RootTree:
    """The built release's root filesystem, unpacked once into ``work/tree`` and edited per version."""

    def __init__(self, base: Release, work: Path) -> None:
        self.base = base
        self.work = work
        self.tree = work / "tree"
        self.manifest = json.loads(base.manifest.read_text())
        work.mkdir(parents=True, exist_ok=True)
        erofs = work / "base.erofs"
        _run("zstd", "-q", "-d", "-f", base.root_payload, "-o", erofs)
        mnt = work / "mnt"
        mnt.mkdir(exist_ok=True)
        _run("mount", "-t", "erofs", "-o", "loop,ro", erofs, mnt)
        try:
            _run("cp", "-a", f"{mnt}/.", self.tree)  # -a keeps owners, modes, links and xattrs
        finally:
            _run("umount", mnt)
        erofs.unlink()

    def make(self, version: str, *, trust_root: bytes, plan: dict[str, object], security_epoch: int = 0,
             masked: tuple[str, ...] = ()) -> Derived:
        t = self.tree
        self._set_version(version)
        (t / "usr/lib/quantix/tuf-root.json").write_bytes(trust_root)
        agent_dir = t / "usr/local/lib/qx-e2e"
        agent_dir.mkdir(parents=True, exist_ok=True)
        for script in ("agent.py", "console_probe.py"):
            shutil.copyfile(HERE / script, agent_dir / script)
        (agent_dir / "plan.json").write_text(json.dumps(plan, indent=1))
        units = t / "etc/systemd/system"
        (units / "qx-e2e-agent.service").write_text(AGENT_UNIT)
        wants = units / "multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / "qx-e2e-agent.service"
        if not link.is_symlink():
            link.symlink_to("../qx-e2e-agent.service")
        for unit in units.glob("*"):  # masks of an earlier derived version
            if unit.is_symlink() and os.readlink(unit) == "/dev/null" and unit.name.startswith("qx-"):
                unit.unlink()
        for unit in masked:
            (units / unit).symlink_to("/dev/null")

        out = self.work / f"release-{version}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        erofs = self.work / f"root-{version}.erofs"
        erofs.unlink(missing_ok=True)
        _run("mkfs.erofs", "--quiet", erofs, t)
        name = f"quantix-os_{version}"
        payload = out / f"{name}.root.erofs.zst"
        _run("zstd", "-q", "-3", "-T0", erofs, "-o", payload)
        uki = out / f"{name}.efi"
        size = erofs.stat().st_size
        from qx_build.hashing import sha256_file

        slot_sha256 = sha256_file(erofs)
        tree = sealing.tree_of(erofs, size, slot_sha256)
        signing = secureboot.resolve(None, None, dev_keys=REPO / "build" / "keys")
        cmdline = sealing.seal_uki(self.base.uki, uki, tree.roothash, signing)
        manifest = {**self.manifest, "version": version, "security_epoch": security_epoch, "kernel_cmdline": cmdline,
                    "artifacts": {
                        "root": {**artifacts.describe(payload), "uncompressed_size": size,
                                 "uncompressed_sha256": slot_sha256, "slot_size_min": size,
                                 "verity": {"roothash": tree.roothash, "hash_tree_size": len(tree.image),
                                            "data_blocks": tree.data_blocks}},
                        "uki": artifacts.describe(uki)}}
        manifest_path = out / f"{name}.manifest.json"
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        artifacts.write_sha256sums(out / "SHA256SUMS", [payload, uki, manifest_path])
        return Derived(version, out, erofs, tree, uki, cmdline)

    def _set_version(self, version: str) -> None:
        osrel = self.tree / "usr/lib/os-release"
        lines = []
        for line in osrel.read_text().splitlines():
            key = line.partition("=")[0]
            if key in ("PRETTY_NAME", "VERSION", "VERSION_ID", "IMAGE_VERSION"):
                line = re.sub(r"\d+\.\d+\.\d+(?:[-~][0-9A-Za-z.]+)?", version, line)
            lines.append(line)
        osrel.write_text("\n".join(lines) + "\n")


def disk_with_root_a(base_disk: Path, rel: Derived, out: Path) -> Path:
    """A copy of the built disk image (sparse) whose slot A holds ``rel``: its root, sealed (hash tree and
    partition UUIDs), and its UKI as slot A's boot entry."""
    _run("cp", "--sparse=always", base_disk, out)
    (part,) = [p for p in gpt.read_table(out) if p.name == "root-a"]
    size = rel.erofs.stat().st_size
    assert size <= part.size, f"{rel.erofs} ({size} bytes) does not fit root-a ({part.size} bytes)"
    with rel.erofs.open("rb") as src, out.open("r+b") as dst:
        dst.seek(part.start)
        shutil.copyfileobj(src, dst, 4 << 20)
        dst.flush()
        os.fsync(dst.fileno())
    sealing.seal_disk(out, rel.tree)
    esp.install_slot_a(out, version=rel.version, uki=rel.uki, cmdline=rel.cmdline,
                       source_date_epoch=int(read_mkosi_setting("SourceDateEpoch")))
    return out
