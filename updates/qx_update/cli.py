"""Command line of qx-update (see ``qx-update --help``).

With ``--json`` every command prints exactly its :mod:`qx_update.api` result serialised (with
``schema_version``), and a failure prints an :class:`~qx_update.api.ErrorReport`; the text output is
for people and may change.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from pathlib import Path

from qx_common import progress as progress_mod
from qx_common import run as r
from qx_common.cli import entry
from qx_common.errors import ExternalError, QxError, UserError
from qx_update import api
from qx_update import config as cfgmod
from qx_update.client import Client, reboot_plan
from qx_update.contract import CHANNELS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qx-update", description="Quantix OS signed A/B updates")
    p.add_argument("--config", type=Path, help=f"settings file (default {cfgmod.DEFAULT_CONFIG})")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="slots, channel, last check and error, rollbacks")
    chk = sub.add_parser("check", help="refresh signed metadata and say what would be installed")
    chk.add_argument("--from", dest="source", type=Path, help="offline repository (directory or tarball)")
    ap = sub.add_parser("apply", help="install the newest eligible release into the inactive slot")
    ap.add_argument("--from", dest="source", type=Path, help="offline repository (directory or tarball)")
    ap.add_argument("--reboot", action="store_true", help="reboot into it (inside the maintenance window)")
    ap.add_argument("--reboot-now", action="store_true", help="reboot into it now, ignoring the window")
    rb = sub.add_parser("rollback", help="boot the other slot next (or cancel an update not booted yet)")
    rb.add_argument("--reboot", action="store_true", help="reboot now")
    ch = sub.add_parser("channel", help="show or set the update channel")
    chs = ch.add_subparsers(dest="action", required=True)
    chs.add_parser("show")
    cs = chs.add_parser("set")
    cs.add_argument("name", choices=CHANNELS)
    g = sub.add_parser("gate", help="(boot) wait for the health gates before boot-complete.target")
    g.add_argument("--timeout", type=float, help="seconds (default: gate_timeout of the config)")
    g.add_argument("--no-reboot", action="store_true", help="do not reboot a counted boot that fails")
    sub.add_parser("blessed", help="(boot) after systemd-bless-boot: raise the epoch floor, record rollbacks")
    sub.add_parser("checkin", help="report this host to the update server's fleet view now")
    al = sub.add_parser("allow", help="offer again a release this host rolled back from")
    al.add_argument("version")
    return p


def _print(args: argparse.Namespace, result: api.Model, text: str) -> None:
    # apply --json streams progress as JSON lines first, so its result is one line too.
    print(result.to_json(compact=args.command == "apply") if args.json else text)


def _status_text(s: api.UpdateStatus) -> str:
    lines = [f"channel {s.channel}  server {s.server_url or '(none)'}  "
             f"security-epoch floor {s.security_epoch_floor}"]
    if s.esp_error:
        lines.append(f"ESP: {s.esp_error}")
    for name, sl in s.slots.items():
        flags = [f for f, on in (("running", sl.active), ("next boot", sl.next_boot)) if on]
        if sl.version is None:
            health = "no boot entry"
        elif sl.bad:
            health = f"bad (tries used: {sl.tries_done})"
        elif sl.blessed:
            health = "blessed"
        else:
            health = f"on trial, {sl.tries_left} tries left"
        lines.append(f"slot {name.upper()}: {sl.version or '-':<12} {health:<28} {', '.join(flags)}")
    lc = s.last_check
    lines.append(f"last check: {lc.at} {lc.result} {lc.version or ''}".rstrip() if lc else "last check: never")
    if s.last_error:
        lines.append(f"last error: {s.last_error.at} {s.last_error.message}")
    ci = s.last_checkin
    if ci:
        lines.append(f"last fleet check-in: {ci.at} after {ci.event}: {'ok' if ci.ok else 'FAILED'} ({ci.detail})")
    if s.secure_boot:
        lines.append(f"Secure Boot: {s.secure_boot.note}")
    for version, why in sorted(s.refused.items()):
        lines.append(f"refused: {version}: {why.sentence()}; 'qx-update allow {version}' retries it")
    lines.append(s.message)
    return "\n".join(lines)


def _json_progress() -> progress_mod.Observer:
    """An observer printing one :class:`~qx_update.api.ProgressEvent` line per whole percent of each phase."""
    last: dict[str, int] = {}

    def observe(label: str, done: int, total: int) -> None:
        pct = int(min(done / max(total, 1), 1.0) * 100)
        if last.get(label) != pct:
            last[label] = pct
            print(api.ProgressEvent(schema_version=api.SCHEMA_VERSION, phase=label, done=done, total=total,
                                    percent=pct, message=f"{label} {pct} %").to_json(compact=True), flush=True)
    return observe


def _reboot(window: str, now_: bool) -> str:
    when = None if now_ else reboot_plan(window, dt.datetime.now())
    if when is None:
        r.run(["systemctl", "reboot"])
        return "rebooting"
    r.run(["shutdown", "-r", when, "Quantix OS update: reboot in the maintenance window"])
    return f"reboot scheduled for {when} (maintenance window {window})"


def _main(argv: list[str]) -> int:
    json_out = "--json" in argv
    try:
        return _run(argv)
    except QxError as e:
        if json_out:  # the same error as on stderr, for programs (exit code unchanged)
            print(api.ErrorReport(schema_version=api.SCHEMA_VERSION, error=e.message, hint=e.hint,
                                  exit_code=e.exit_code).to_json(compact=True), flush=True)
        raise


def _run(argv: list[str]) -> int:
    args = _parser().parse_args([a for a in argv if a != "--debug"])
    cfg = cfgmod.load(args.config)
    progress: bool | progress_mod.Observer = sys.stderr is not None
    if args.json:
        # Nothing but models on stdout: apply's progress as api.ProgressEvent lines, from an observer.
        progress_mod.MODE = "off"
        progress = _json_progress() if args.command == "apply" else False
    client = Client(cfg, progress=progress)
    if args.command in ("check", "apply", "rollback", "channel", "gate", "blessed", "checkin", "allow"):
        client.lock()
    if args.command == "status":
        s = client.status()
        _print(args, s, _status_text(s))
    elif args.command == "check":
        c = client.check(args.source)
        _print(args, c, f"{c.message}  [metadata refresh {c.metadata_refresh_s} s]")
    elif args.command == "apply":
        res = client.apply(args.source)
        if res.applied and (args.reboot or args.reboot_now):
            res = dataclasses.replace(res, reboot=_reboot(cfg.maintenance_window, args.reboot_now))
        _print(args, res, res.message + (f"\n{res.reboot}" if res.reboot else ""))
    elif args.command == "rollback":
        rb = client.rollback()
        if args.reboot:
            rb = dataclasses.replace(rb, reboot=_reboot("", True))
        text = (f"cancelled the update to {rb.cancelled}; next boot stays on slot {(rb.next_boot or '?').upper()}"
                if not rb.rolled_back else
                f"next boot: slot {(rb.next_boot or '?').upper()} ({rb.to_version}); {rb.message}")
        _print(args, rb, text + (f"\n{rb.reboot}" if rb.reboot else ""))
    elif args.command == "channel":
        if args.action == "show":
            _print(args, api.ChannelResult(schema_version=api.SCHEMA_VERSION, channel=cfg.channel, file=None),
                   cfg.channel)
        else:
            ch = client.channel_set(args.name)
            _print(args, ch, f"channel set to {ch.channel} ({ch.file})")
    elif args.command == "gate":
        g = client.gate(args.timeout, reboot_on_failure=not args.no_reboot)
        _print(args, g, ("health gate passed" if g.ok else f"health gate FAILED: {g.reason}"))
        return 0 if g.ok else 1
    elif args.command == "blessed":
        b = client.blessed()
        _print(args, b, f"slot {b.slot.upper()} blessed={b.blessed} security-epoch floor {b.security_epoch_floor}"
                        + (f"; rolled back from {b.rollback.from_version}" if b.rollback else ""))
    elif args.command == "allow":
        al = client.allow(args.version)
        _print(args, al, al.message)
    elif args.command == "checkin":
        ci = client.checkin("manual")
        if ci is None:
            raise UserError(f"no check-in token: {cfg.checkin_token_file} does not exist or is empty",
                            hint="create a token with the 'checkin' scope on the update server "
                                 "(qx-update-server token create --scopes checkin) and write it there")
        if not ci.ok:
            raise ExternalError(f"check-in to {cfg.server_url} failed: {ci.detail}",
                                hint="check server_url and the token; updates work without check-ins")
        _print(args, ci, f"checked in with {cfg.server_url} ({ci.detail})")
    return 0


main = entry(_main)
