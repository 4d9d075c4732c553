"""``qx-build``: the commands behind ``make image``, ``make repro-check``, ``make size``, ``make boot``."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from qx_common import run as r
from qx_common.cli import entry
from qx_common.errors import ExternalError, UserError
from qx_build.paths import REPO, Release, read_version


def _int_arg(name: str, value: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"{name}={value} is not a whole number", hint=f"use {lo}..{hi}") from None
    if not lo <= n <= hi:
        raise UserError(f"{name}={n} is out of range", hint=f"use {lo}..{hi}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qx-build", description="Build and check the Quantix OS image")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--build-dir", type=Path, default=REPO / "build")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("preflight", help="check the machine can build (root, tools, loop, disk, mirror)")
    img = sub.add_parser("image", help="build the disk image, ISO and update artifacts")
    img.add_argument("--no-iso", action="store_true", help="skip the live ISO (faster)")
    img.add_argument("--security-epoch", default="0", help="security epoch of this release (default 0)")
    img.add_argument("--fast", action="store_true",
                     help="development build: fast zstd levels, same formats (the size report says so)")
    img.add_argument("--full", action="store_true",
                     help="run mkosi even when only our Python code changed since the last build (qx_build.quick)")
    img.add_argument("--tuf-root", type=Path, default=None,
                     help="the update repository's root.json, shipped as the host's trust anchor")
    img.add_argument("--sb-key", type=Path, default=None,
                     help="Secure Boot signing key (PEM, RSA); with --sb-cert. Default: development keys in build/keys")
    img.add_argument("--sb-cert", type=Path, default=None, help="its X.509 certificate (PEM); with --sb-key")
    sub.add_parser("dev-keys", help="make the development keys in BUILD_DIR/keys (once: TUF update keys and the "
                                    "Secure Boot pair in keys/secureboot) and print their root.json (make update-server)")
    sub.add_parser("repro-check", help="rebuild and compare root slot and UKI bit for bit")
    size_p = sub.add_parser("size", help="report artifact sizes and the root's largest directories; fail when the "
                                         "update payload is over 150 MB, naming what grew (image/size-record.json)")
    size_p.add_argument("--record", action="store_true",
                        help="write this release build's sizes to image/size-record.json (what later builds are "
                             "compared with)")
    boot = sub.add_parser("boot", help="boot the disk image (or --iso) in QEMU on this terminal")
    boot.add_argument("--iso", action="store_true")
    boot.add_argument("--accel", default="auto")
    boot.add_argument("--memory", default="3072")
    return p


def _main(argv: list[str]) -> int:
    try:
        return _command(argv)
    except OSError as e:
        # A file step of the build failed (disk full, a file removed under us, a path that is not a
        # directory): the machine's state, not a bug in qx-build — an error with a hint, not exit 70.
        where = f"{e.filename}: " if e.filename else ""
        raise ExternalError(f"{where}{e.strerror or e}",
                            hint="check free space (df -h) and the build directory, then run the command again") from e


def _command(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    build_dir: Path = args.build_dir.resolve()
    if args.command == "preflight":
        from qx_build import preflight

        preflight.check_all(build_dir)
        print("preflight: ok")
        return 0
    if args.command == "image":
        from qx_build import build

        epoch = _int_arg("SECURITY_EPOCH", args.security_epoch, 0, 1_000_000)
        build.run(build.BuildOptions(build_dir=build_dir, security_epoch=epoch, with_iso=not args.no_iso,
                                     tuf_root=args.tuf_root, sb_key=args.sb_key, sb_cert=args.sb_cert,
                                     profile="fast" if args.fast else "release", full=args.full))
        return 0
    if args.command == "dev-keys":
        from qx_build import secureboot, trust

        root = trust.ensure_dev_keys(build_dir / "keys")
        secureboot.ensure_dev_keys(build_dir / "keys")
        print(root)
        return 0
    if args.command == "repro-check":
        from qx_build import repro

        return repro.run(build_dir)
    if args.command == "size":
        from qx_build import size

        sizes = size.measure(build_dir)
        print(size.render(sizes))
        if args.record:
            size.record(sizes)
            print(f"recorded in {size.RECORD}")
            return 0
        size.check(sizes, size.load_record())
        return 0
    if args.command == "boot":
        from qx_build import qemu

        rel = Release(read_version(), build_dir)
        target = rel.iso if args.iso else rel.disk
        if not target.exists():
            raise UserError(f"{target.name} is not built", hint="run 'make image' first")
        memory = _int_arg("MEMORY", args.memory, 1024, 65536)
        with tempfile.TemporaryDirectory(prefix="qx-boot-") as tmp:
            m = qemu.Machine(Path(tmp), disk=None if args.iso else rel.disk, iso=rel.iso if args.iso else None,
                             accel=args.accel, memory_mb=memory)
            m.prepare()
            argv_q = m.argv()
            print(f"booting {target.name} with {qemu.resolve_accel(args.accel).upper()} — Ctrl-A X quits")
            # Interactive: QEMU owns the terminal until the operator quits it (nothing captured).
            return r.run(argv_q, check=False, capture=False).returncode
    raise AssertionError(args.command)


main = entry(_main)
