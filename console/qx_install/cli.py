"""Command line of qx-install.

* ``qx-install validate FILE`` — exit 0 when the answer file is valid, else 2 with an ``error:`` and a
  ``hint:`` line for every bad key.
* ``qx-install disks [--json]`` — the disks an install could use, and why the others cannot be used.
* ``qx-install run [--answer FILE] --target /dev/DISK [--payload DIR] [--yes]`` — install onto one disk
  (what the ISO runs; usable on any Linux host with the ISO's ``quantix/`` payload).
* ``qx-install auto`` — the ISO's unattended install: find an answer file (kernel command line,
  QXANSWER volume, the medium), install, then reboot or power off as it says. No answer: exit 0.
* ``qx-install iso --answer FILE --out OUT.iso [ISO]`` — an unattended ISO from the stock one.

Progress goes to stderr; ``auto`` also prints ``QUANTIX-INSTALL…`` lines on the console and keeps
``/run/quantix/install/status.json`` current for the installer screens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from qx_common.cli import entry
from qx_common.errors import UserError
from qx_console.hostconfig import ValidationError

STATUS_FILE = Path("/run/quantix/install/status.json")


def _print_validation(e: ValidationError, prog: str = "qx-install") -> None:
    for fe in e.errors:
        print(f"{prog}: error: {fe.field}: {fe.message}", file=sys.stderr)
        if fe.hint:
            print(f"{prog}: hint: {fe.hint}", file=sys.stderr)


def _cmd_validate(args: argparse.Namespace) -> int:
    from qx_install import answer

    try:
        ans = answer.load(Path(args.file))
    except ValidationError as e:
        _print_validation(e)
        return 2
    inst = ans.install
    print(f"{args.file}: valid: mode {inst.mode}, host {ans.host.hostname}, keyboard {inst.keyboard}, "
          f"then {inst.after}")
    return 0


def _cmd_disks(args: argparse.Namespace) -> int:
    from qx_install import disks

    pl = _payload(args.payload, required=False)
    need = pl.min_disk_bytes if pl else 0
    found = disks.list_disks(min_bytes=need, boot_medium=disks.find_boot_medium(), include=args.include)
    if args.json:
        from dataclasses import asdict

        print(json.dumps([asdict(d) for d in found], indent=2, default=str))
        return 0
    if not found:
        print("no disks found")
    for d in found:
        print(d.describe())
    return 0


def _payload(path: str | None, *, required: bool = True):  # type: ignore[no-untyped-def]
    from qx_common.errors import EnvironmentError_
    from qx_install import payload

    try:
        if path:
            return payload.open_payload(Path(path))
        env = payload.env_payload_dir()
        return payload.find([env] if env else None)
    except EnvironmentError_:
        if required:
            raise
        return None


def _progress_printer(prefix: str = "", status: Path | None = None):  # type: ignore[no-untyped-def]
    last: dict[str, Any] = {"key": None}

    def cb(p: Any) -> None:
        pct = int(p.fraction * 100)
        key = (p.index, pct // 10 if p.size else -1, p.message)
        if key != last["key"]:
            last["key"] = key
            print(f"{prefix}[{p.index}/{p.total}] {p.step}: {p.message}" + (f" {pct} %" if p.size else ""),
                  file=sys.stderr, flush=True)
        if status is not None:
            _write_status(status, {"state": "running", "step": p.step, "index": p.index, "total": p.total,
                                   "done": p.done, "size": p.size, "message": p.message})
    return cb


def _write_status(path: Path, data: dict[str, Any]) -> None:
    from qx_common.fs import atomic_write

    try:
        atomic_write(path, json.dumps(data))
    except OSError:
        pass  # the status file only feeds the screens; the install itself goes on


def _target_disk(target: str, min_bytes: int):  # type: ignore[no-untyped-def]
    from qx_install import disks

    real = os.path.realpath(target)
    for d in disks.list_disks(min_bytes=min_bytes, boot_medium=disks.find_boot_medium(), include=[real]):
        if os.path.realpath(d.path) == real:
            return d
    raise UserError(f"--target {target}: not a whole disk of this machine",
                    hint="give a disk such as /dev/sdb or /dev/disk/by-id/..., not a partition (see qx-install disks)")


def _confirm(plan: Any, yes: bool) -> None:
    for line in plan.summary():
        print(line, file=sys.stderr)
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError("refusing to write the disk without confirmation",
                        hint="add --yes to confirm the plan above (or run on a terminal and answer 'yes')")
    if input("Type 'yes' to continue: ").strip() != "yes":
        raise UserError("not confirmed: nothing was written", hint="type yes to go ahead")


def _cmd_run(args: argparse.Namespace) -> int:
    from qx_install import answer, engine

    ans = None
    if args.answer:
        try:
            ans = answer.load(Path(args.answer))
        except ValidationError as e:
            _print_validation(e)
            return 2
    pl = _payload(args.payload)
    disk = _target_disk(args.target, pl.min_disk_bytes)
    if ans is not None:
        from qx_install import disks

        filt = ans.install.disk
        misses = [why for why, ok in disks.match(disk, filt) if not ok]
        if misses:
            raise UserError(f"--target {args.target} does not match the answer file's install.disk: "
                            + "; ".join(misses), hint="fix [install.disk] or give the disk it describes")
        plan = engine.plan(disk, payload=pl, mode=ans.install.mode, host=ans.host,
                           root_password_hash=ans.install.root_password_hash or None,
                           keyboard=ans.install.keyboard, keep_config=ans.install.keep_config,
                           source="answer-file", host_fields=ans.host_fields)
    else:
        plan = engine.plan(disk, payload=pl, mode=args.mode, host=None, root_password_hash=None)
    _confirm(plan, args.yes)
    res = engine.execute(plan, _progress_printer(), log_path=Path(args.log) if args.log else engine.DEFAULT_LOG)
    print(f"installed Quantix OS {res.version} on {res.disk} (slot {res.slot.upper()}); log: {res.log_path}")
    return 0


def _cmd_auto(args: argparse.Namespace) -> int:
    """The ISO's unattended path. Every outcome is also a ``QUANTIX-INSTALL`` line on the console."""
    from qx_common import run as r
    from qx_install import answer, disks, engine, sources

    status = Path(args.status)
    media = [Path(args.payload).parent] if args.payload else []
    pl = _payload(args.payload)
    media_dirs = list({pl.dir.parent, *media})
    cmdline = Path(args.cmdline).read_text() if Path(args.cmdline).exists() else ""
    found = sources.find_answer(cmdline=cmdline, media_dirs=media_dirs)
    if found is None:
        print("qx-install: no answer file (kernel command line, QXANSWER volume, medium): interactive install")
        return 0
    where, data = found
    say = _console_line
    # At once, before anything slow: the installer screens see an unattended install is under way and
    # do not offer an interactive one meanwhile.
    _write_status(status, {"state": "running", "step": "answer", "message": f"answer file from {where}"})
    say(f"QUANTIX-INSTALL-ANSWER source={where}")
    try:
        ans = answer.parse(data, source=where)
    except ValidationError as e:
        for fe in e.errors:
            say(f"QUANTIX-INSTALL-FAILED step=answer {fe.field}: {fe.message} ({fe.hint})")
        _write_status(status, {"state": "failed", "step": "answer", "message": str(e),
                               "errors": [str(fe) for fe in e.errors]})
        return 2
    try:
        candidates = disks.list_disks(min_bytes=pl.min_disk_bytes, boot_medium=disks.find_boot_medium())
        disk = disks.select(candidates, ans.install.disk)
        plan = engine.plan(disk, payload=pl, mode=ans.install.mode, host=ans.host,
                           root_password_hash=ans.install.root_password_hash or None,
                           keyboard=ans.install.keyboard, keep_config=ans.install.keep_config,
                           source="answer-file", host_fields=ans.host_fields)
        for line in plan.summary():
            say(f"QUANTIX-INSTALL-PLAN {line}")
        res = engine.execute(plan, _progress_printer("QUANTIX-INSTALL ", status))
    except engine.InstallError as e:
        say(f"QUANTIX-INSTALL-FAILED step={e.step} {e.message} (log: {e.log_path})")
        _write_status(status, {"state": "failed", "step": e.step, "message": e.message, "log": str(e.log_path)})
        return e.exit_code
    except UserError as e:
        say(f"QUANTIX-INSTALL-FAILED step=plan {e.message}" + (f" (hint: {e.hint})" if e.hint else ""))
        _write_status(status, {"state": "failed", "step": "plan", "message": e.message, "hint": e.hint or ""})
        return e.exit_code
    secs = " ".join(f"{k.replace(' ', '_')}={v:.1f}" for k, v in res.seconds.items())
    say(f"QUANTIX-INSTALL-DONE version={res.version} disk={res.disk} slot={res.slot} after={ans.install.after} {secs}")
    _write_status(status, {"state": "done", "version": res.version, "disk": res.disk, "after": ans.install.after,
                           "mode": res.mode, "slot": res.slot})
    if ans.install.after in ("reboot", "poweroff") and not args.no_power:
        r.run(["systemctl", "--no-block", ans.install.after])
    return 0


def _console_line(text: str) -> None:
    """A line on stdout (the journal, and the console through the unit's StandardOutput)."""
    print(text.replace("—", "-"), flush=True)


def _cmd_iso(args: argparse.Namespace) -> int:
    from qx_install import answer, remaster

    try:
        answer.load(Path(args.answer))
    except ValidationError as e:
        _print_validation(e)
        return 2
    src = Path(args.iso) if args.iso else remaster.default_iso()
    remaster.with_answer(src, Path(args.answer), Path(args.out))
    print(f"{args.out}: unattended ISO (answer file {args.answer} as /quantix/answer.toml)")
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qx-install", description="Install Quantix OS onto a disk")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check an answer file (exit 0 valid, 2 with every error)")
    v.add_argument("file")
    d = sub.add_parser("disks", help="list the disks an install could use")
    d.add_argument("--json", action="store_true")
    d.add_argument("--payload", help="the installation payload directory (for the minimum disk size)")
    d.add_argument("--include", action="append", default=[], help="also list this device (e.g. a loop device)")
    run = sub.add_parser("run", help="install onto one disk")
    run.add_argument("--answer", help="answer file (TOML)")
    run.add_argument("--target", required=True, help="the whole disk to install onto, e.g. /dev/sdb")
    run.add_argument("--payload", help="the payload directory (default: quantix/ on the mounted ISO)")
    run.add_argument("--mode", choices=("wipe", "keep-data", "upgrade"), default="wipe",
                     help="without --answer: what to do (default wipe)")
    run.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    run.add_argument("--log", help="log file (default /run/quantix/install.log)")
    a = sub.add_parser("auto", help="the ISO's unattended install (does nothing without an answer file)")
    a.add_argument("--payload", help="the payload directory (default: quantix/ on the mounted ISO)")
    a.add_argument("--cmdline", default="/proc/cmdline", help=argparse.SUPPRESS)
    a.add_argument("--status", default=str(STATUS_FILE), help=argparse.SUPPRESS)
    a.add_argument("--no-power", action="store_true", help="do not reboot/power off afterwards")
    i = sub.add_parser("iso", help="make an unattended ISO from the stock one")
    i.add_argument("--answer", required=True)
    i.add_argument("--out", required=True)
    i.add_argument("iso", nargs="?", help="the stock ISO (default: build/quantix-os_<version>.iso)")
    return p


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return {"validate": _cmd_validate, "disks": _cmd_disks, "run": _cmd_run, "auto": _cmd_auto,
            "iso": _cmd_iso}[args.cmd](args)


main = entry(_main)
