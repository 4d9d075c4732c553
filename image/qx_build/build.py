"""One build: preflight → keys → wheels → mkosi (disk), or after a change to our Python code only the
earlier build's tree with the new wheel (:mod:`qx_build.quick`) → root payload → verity seal (tree, root
hash in the UKI) → ESP entry → signatures checked → artifacts → live ESP + ISO → publish.

Outputs land in ``build/`` only at the very end, by rename (see :mod:`qx_build`). ``build/.work`` keeps
intermediate trees between runs so warm builds are fast; it is never part of a release. mkosi's output
directory (``build/.work/disk``) stays as mkosi left it, the tree included: it is the next quick build's
base. The disk image's hash runs in a thread beside the ISO's steps (SHA-256 releases the GIL).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qx_common import log
from qx_common import run as r
from qx_common.errors import ExternalError
from qx_build import (artifacts, esp, installpayload, iso, live, mkosi, preflight, quick, sealing, secureboot,
                      trust, wheels)
from qx_build.hashing import sha256_file
from qx_build.paths import REPO, Release, read_mkosi_setting, read_version


@dataclass(frozen=True)
class BuildOptions:
    build_dir: Path = REPO / "build"
    security_epoch: int = 0
    with_iso: bool = True
    incremental: bool = True
    check_network: bool = True
    tuf_root: Path | None = None
    sb_key: Path | None = None      # SB_KEY/SB_CERT: the Secure Boot signing pair (qx_build.secureboot)
    sb_cert: Path | None = None
    profile: str = "release"        # "fast": lower zstd levels, same formats (make image FAST=1)
    full: bool = False              # run mkosi even when only our Python code changed (make image FULL=1)


def work_dir(build_dir: Path) -> Path:
    return build_dir / ".work"


# mkosi's CompressLevel= per build profile: it compresses the UKI's initrd (xz, image/initrd/mkosi.conf; xz's
# levels end at 9) and its kernel-modules initrd (zstd; .ko.xz files, which barely compress further).
MKOSI_COMPRESS_LEVELS = {"release": 9, "fast": 3}


def mkosi_args(signing: secureboot.KeyPair, profile: str) -> list[str]:
    """The mkosi settings that differ per build: the Secure Boot pair and the profile's compression level
    of the UKI's initrds (:data:`MKOSI_COMPRESS_LEVELS`). A second build (repro-check) passes the same."""
    return [*secureboot.mkosi_args(signing), "--compress-level", str(MKOSI_COMPRESS_LEVELS[profile])]


def build_disk(version: str, out_dir: Path, epoch: str, *, incremental: bool,
               signing: secureboot.KeyPair, profile: str = "release") -> Release:
    """The mkosi disk variant into ``out_dir`` (the wheelhouse made first: :func:`qx_build.wheels.prepare`);
    returns mkosi's file names there."""
    mkosi.build("disk", version=version, output_dir=out_dir, source_date_epoch=epoch, incremental=incremental,
                extra=mkosi_args(signing, profile))
    return Release(version, out_dir)


def signing_keys(opts: BuildOptions) -> secureboot.KeyPair:
    """SB_KEY/SB_CERT, or the development pair. ``build/keys`` is the TUF development key directory,
    made whole by ``qx-release keys init`` (which refuses a directory that exists), so it is made
    first even when TUF_ROOT is given; the Secure Boot pair then goes into ``build/keys/secureboot``."""
    keys = opts.build_dir / "keys"
    if opts.sb_key is None and opts.sb_cert is None:
        trust.ensure_dev_keys(keys)
    return secureboot.resolve(opts.sb_key, opts.sb_cert, dev_keys=keys)


def verify_esp_signatures(disk: Path, version: str, kp: secureboot.KeyPair, scratch: Path,
                          *, source_date_epoch: int) -> Path:
    """Check every binary the firmware loads from the disk's ESP against the certificate, and copy
    the enrollment files out (for the install payload); returns that directory."""
    from qx_update import bootentry

    e = esp.EspImage(disk, source_date_epoch=source_date_epoch)
    shutil.rmtree(scratch, ignore_errors=True)
    keys = scratch / "keys"
    keys.mkdir(parents=True)
    for what, path in (("the ESP's fallback boot loader", "EFI/BOOT/BOOTX64.EFI"),
                       ("the ESP's systemd-boot", "EFI/systemd/systemd-bootx64.efi"),
                       ("the ESP's UKI", bootentry.uki_path(version))):
        secureboot.verify(e.copy_out(path, scratch / Path(path).name), kp, what=what)
    present = e.list(bootentry.ENROLL_KEYS_DIR)
    for name in installpayload.ENROLL_FILES:
        if name not in present:
            raise ExternalError(f"the ESP's {bootentry.ENROLL_KEYS_DIR} lacks {name} (found {present})",
                                hint="mkosi's SecureBootAutoEnroll= wrote nothing: check sbsigntool (make host-deps)")
        e.copy_out(f"{bootentry.ENROLL_KEYS_DIR}/{name}", keys / name)
    return keys


@dataclass
class Phases:
    """Where a build's time went, phase by phase (printed at the end: what to make faster next)."""

    spent: list[tuple[str, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.spent.append((name, time.monotonic() - t0))

    def summary(self, total: float) -> str:
        parts = [f"{name} {s:.0f} s" for name, s in self.spent]
        other = total - sum(s for _, s in self.spent)
        return ", ".join([*parts, f"the rest {max(other, 0.0):.0f} s"])


def run(opts: BuildOptions) -> Release:
    started = time.monotonic()
    phase = Phases()
    version = read_version()
    epoch = read_mkosi_setting("SourceDateEpoch")
    with phase("preflight"):
        preflight.check_all(opts.build_dir, network=False)  # the mirror only when mkosi runs (below)
    # Without TUF_ROOT: the development keys in build/keys (made once), named on every build and in
    # the manifest, so a default image still takes updates (from make update-server).
    with phase("keys"):
        trust_record = trust.stage(opts.tuf_root, work_dir(REPO / "build") / "trust", dev_keys=opts.build_dir / "keys")
        # Without SB_KEY/SB_CERT: the development Secure Boot pair in build/keys/secureboot (made once), likewise named.
        signing = signing_keys(opts)
        # The host's copy of that certificate: qx-update installs only UKIs that verify against it (Secure Boot on).
        secureboot.stage_certificate(signing, work_dir(REPO / "build") / "trust")

    work = work_dir(opts.build_dir)
    disk_dir, live_dir, out = work / "disk", work / "live", work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    wheel_dir = work_dir(REPO / "build") / "wheels"
    with phase("wheels"):
        wheels.prepare(wheel_dir, epoch)
    wheel = wheels.ours(wheel_dir)

    mkosi_cache = REPO / read_mkosi_setting("CacheDirectory")

    def current_sources() -> str:
        argv, env = mkosi.command(version=version, output_dir=disk_dir, source_date_epoch=epoch,
                                  incremental=opts.incremental, extra=mkosi_args(signing, opts.profile))
        return quick.sources(
            repo=REPO, wheel_dir=wheel_dir, trust_dir=work_dir(REPO / "build") / "trust",
            mkosi_args=[*argv, *(f"{k}={v}" for k, v in sorted(env.items()))], version=version, epoch=epoch,
            mkosi_version=".".join(map(str, preflight.mkosi_version())), signing_files=[signing.key, signing.cert])

    sources = current_sources()
    rel = Release(version, out)
    mk = Release(version, disk_dir)
    why_full = ("asked for (--full)" if opts.full else "not incremental" if not opts.incremental
                else quick.usable(disk_dir, inputs=quick.inputs(sources, mkosi_cache), version=version))
    if why_full is None:
        with phase("quick root"):
            root_raw = quick.rebuild_root(disk_dir, wheel=wheel, inputs=quick.inputs(sources, mkosi_cache),
                                          out=work / "quick-root.erofs", version=version, epoch=int(epoch), repo=REPO)
        with phase("disk"):
            quick.disk_from_base(disk_dir, version=version, root=root_raw, out=rel.disk)
    else:
        log.step(f"full build (mkosi): {why_full}")
        if opts.check_network:
            preflight.require_mirror()
        quick.invalidate(disk_dir)
        shutil.rmtree(disk_dir / "quantix-live", ignore_errors=True)  # what builds exported before quantix-tree
        with phase("mkosi"):
            build_disk(version, disk_dir, epoch, incremental=opts.incremental, signing=signing, profile=opts.profile)
        # The disk image is large but sparse; mkosi's copy stays as the next quick build's base.
        with phase("disk"):
            r.run(["cp", "--sparse=auto", "--reflink=auto", mk.disk, rel.disk])
        root_raw = mk.disk.with_suffix(".root.raw")
    mk_uki = mk.disk.with_suffix(".efi")
    secureboot.verify(mk_uki, signing, what="mkosi's UKI")
    with phase("compressing the root"):
        root_info = artifacts.compress_root(root_raw, rel.root_payload, profile=opts.profile)
    # dm-verity: the root's hash tree into root-a-verity, the root hash into the UKI (qx_build.sealing).
    with phase("verity"):
        tree = sealing.tree_of(root_raw, int(root_info["slot_size_min"]), str(root_info["uncompressed_sha256"]))
        sealing.seal_disk(rel.disk, tree)
        cmdline = sealing.seal_uki(mk_uki, rel.uki, tree.roothash, signing)
    root_info["verity"] = {"roothash": tree.roothash, "hash_tree_size": len(tree.image),
                           "data_blocks": tree.data_blocks}
    with phase("ESP"):
        esp.install_slot_a(rel.disk, version=version, uki=rel.uki, cmdline=cmdline, source_date_epoch=int(epoch))
        enroll_keys = verify_esp_signatures(rel.disk, version, signing, work / "esp-check",
                                            source_date_epoch=int(epoch))
    if why_full is not None and opts.incremental:
        # The base for the next quick build, once mkosi's output checked out: only if nothing changed while
        # mkosi ran (it reads the sources over minutes), with the cache it made, and if a rebuild from the
        # tree gives mkosi's root byte for byte (qx_build.quick.adopt).
        if current_sources() != sources:
            log.step("quick: not recorded, an input changed while mkosi ran (the next build runs mkosi again)")
        else:
            with phase("quick base check"):
                why_not = quick.adopt(disk_dir, wheel=wheel, inputs=quick.inputs(sources, mkosi_cache),
                                      version=version, epoch=int(epoch), repo=REPO, out=work / "quick-check.erofs")
            if why_not is not None:
                log.step(f"WARNING: quick: {why_not}")

    # The disk image's SHA-256 (5.6 GiB, mostly holes: seconds of CPU) runs beside the live ESP's steps, which
    # are other processes; everything after needs it (the manifest in the install payload).
    digests: dict[Path, str] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash") as pool:
        disk_sha = pool.submit(sha256_file, rel.disk)
        for small in (rel.root_payload, rel.uki):
            digests[small] = sha256_file(small)
        live_disk = None
        if opts.with_iso:
            with phase("live ESP"):
                live_disk = live.build_esp(disk_dir / live.TREE_DIR, mk.disk.with_suffix(".vmlinuz"), live_dir,
                                           source_date_epoch=int(epoch), signing=signing,
                                           verify=lambda uki: secureboot.verify(uki, signing, what="the live ISO's UKI"))
        with phase("hashing the disk"):
            digests[rel.disk] = disk_sha.result()
    arts: dict[str, dict[str, object]] = {
        "root": {**artifacts.describe(rel.root_payload, sha256=digests[rel.root_payload]), **root_info},
        "uki": artifacts.describe(rel.uki, sha256=digests[rel.uki]),
        "disk": artifacts.describe(rel.disk, sha256=digests[rel.disk]),
    }

    def manifest() -> dict[str, object]:
        return artifacts.build_manifest(
            version=version, security_epoch=opts.security_epoch, source_date_epoch=int(epoch),
            kernel_cmdline=cmdline, mkosi_manifest=disk_dir / f"quantix-os_{version}.manifest", artifacts=arts,
            update_trust=trust_record, secure_boot=secureboot.record(signing))

    if live_disk is not None:
        # The installer's payload carries the manifest as it stands before the ISO (no ISO hash in it).
        rel.manifest.write_text(json.dumps(manifest(), indent=2, sort_keys=True) + "\n")
        with phase("install payload"):
            payload = installpayload.assemble(rel, mkosi_dir=disk_dir, out=work / "payload", signing=signing,
                                              enroll_keys=enroll_keys, zstd_level=artifacts.ZSTD_LEVELS[opts.profile])
            secureboot.verify(payload / installpayload.BOOTLOADER, signing, what="the install payload's systemd-boot")
        with phase("ISO"):
            iso.make_iso(live_disk=live_disk, out=rel.iso, version=version,
                         source_date_epoch=int(epoch), payload_dir=payload)
        digests[rel.iso] = sha256_file(rel.iso)
        arts["iso"] = artifacts.describe(rel.iso, sha256=digests[rel.iso])
    manifest_data = manifest()
    rel.manifest.write_text(json.dumps(manifest_data, indent=2, sort_keys=True) + "\n")
    files = [f for f in rel.files() if f.exists() and f != rel.sha256sums]
    with phase("checksums"):
        artifacts.write_sha256sums(rel.sha256sums, files, known=digests)

    final = publish(rel, opts.build_dir)
    total = time.monotonic() - started
    log.step(f"done in {total:.0f} s ({opts.profile} build): {final.disk.parent}")
    log.step(f"time: {phase.summary(total)}")
    if trust_record["keys"] == "development":
        log.step(f"WARNING: {trust.DEV_WARNING}")  # again at the end, where it is read
    if signing.development:
        log.step(f"WARNING: {secureboot.DEV_WARNING}")
    for f in final.files():
        if f.exists():
            log.get("build").info("  %-40s %10.1f MiB", f.name, f.stat().st_size / 1024**2)
    return final


def publish(rel: Release, build_dir: Path) -> Release:
    """Move a finished release into ``build_dir`` (renames only; SHA256SUMS last)."""
    final = Release(rel.version, build_dir)
    for src, dst in zip(rel.files(), final.files(), strict=True):
        if src.exists():
            src.rename(dst)
        elif dst.exists():
            dst.unlink()  # a stale file from an older build must not pass as part of this one
    if not final.sha256sums.exists():
        raise ExternalError("publishing the release failed: SHA256SUMS missing")
    return final
