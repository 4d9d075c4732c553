"""Command line of qx-update (see ``qx-update --help``); every command takes ``--json``."""

from __future__ import annotations

import argparse
import json
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from qx_common import run as r
from qx_common.cli import entry
from qx_common.errors import ExternalError, UserError
from qx_update import config as cfgmod
from qx_update.contract import CHANNELS
from qx_common import progress as progress_mod
from qx_update.client import Client, dumps, reboot_plan


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


def _print(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    # apply --json streams progress as JSON lines first, so its result is one line too.
    compact = args.json and args.command == "apply"
    print((json.dumps(data, sort_keys=True) if compact else dumps(data)) if args.json else text)


def _status_text(s: dict[str, Any]) -> str:
    lines = [f"channel {s['channel']}  server {s['server_url'] or '(none)'}  "
             f"security-epoch floor {s['security_epoch_floor']}"]
    if s.get("esp_error"):
        lines.append(f"ESP: {s['esp_error']}")
    for name, sl in s["slots"].items():
        flags = [f for f, on in (("running", sl["active"]), ("next boot", sl["next_boot"])) if on]
        if sl["version"] is None:
            health = "no boot entry"
        elif sl["bad"]:
            health = f"bad (tries used: {sl['tries_done']})"
        elif sl["blessed"]:
            health = "blessed"
        else:
            health = f"on trial, {sl['tries_left']} tries left"
        lines.append(f"slot {name.upper()}: {sl['version'] or '-':<12} {health:<28} {', '.join(flags)}")
    lc = s["last_check"]
    lines.append(f"last check: {lc['at']} {lc['result']} {lc.get('version') or ''}".rstrip() if lc else "last check: never")
    if s["last_error"]:
        lines.append(f"last error: {s['last_error']['at']} {s['last_error']['message']}")
    ci = s.get("last_checkin")
    if ci:
        lines.append(f"last fleet check-in: {ci['at']} after {ci['event']}: {'ok' if ci['ok'] else 'FAILED'} ({ci['detail']})")
    for version, why in sorted((s.get("refused") or {}).items()):
        lines.append(f"refused: {version} (rolled back: {why.get('reason')}; 'qx-update allow {version}' retries it)")
    lines.append(s["message"])
    return "\n".join(lines)


def _reboot(window: str, now_: bool) -> str:
    when = None if now_ else reboot_plan(window, dt.datetime.now())
    if when is None:
        r.run(["systemctl", "reboot"])
        return "rebooting"
    r.run(["shutdown", "-r", when, "Quantix OS update: reboot in the maintenance window"])
    return f"reboot scheduled for {when} (maintenance window {window})"


def _main(argv: list[str]) -> int:
    args = _parser().parse_args([a for a in argv if a != "--debug"])
    cfg = cfgmod.load(args.config)
    progress = sys.stderr is not None
    if args.json:
        progress_mod.MODE = "json" if args.command == "apply" else "off"
        progress = args.command == "apply"
    client = Client(cfg, progress=progress)
    if args.command in ("check", "apply", "rollback", "channel", "gate", "blessed", "checkin", "allow"):
        client.lock()
    if args.command == "status":
        s = client.status()
        _print(args, s, _status_text(s))
    elif args.command == "check":
        c = client.check(args.source)
        avail = c["available"]
        text = (f"running {c['running_version']} on {c['channel']}: "
                + (f"{avail['version']} is installed in the other slot: reboot to start it" if c["installed"]
                   else f"{avail['version']} is available ({avail['download_size'] / 1024**2:.0f} MiB)" if avail
                   else "up to date") + f"  [metadata refresh {c['metadata_refresh_s']} s]")
        _print(args, c, text)
    elif args.command == "apply":
        res = client.apply(args.source)
        if res.get("applied") and (args.reboot or args.reboot_now):
            res["reboot"] = _reboot(cfg.maintenance_window, args.reboot_now)
        text = res.get("message") or (f"installed {res['applied']['version']} into slot {res['slot'].upper()} "
                                      f"({res['entry']}); next boot: slot {res['next_boot'].upper()}")
        if res.get("reboot"):
            text += f"\n{res['reboot']}"
        _print(args, res, text)
    elif args.command == "rollback":
        res = client.rollback()
        if args.reboot:
            res["reboot"] = _reboot("", True)
        text = (f"cancelled the update to {res['cancelled']}; next boot stays on slot {res['next_boot'].upper()}"
                if not res["rolled_back"] else
                f"next boot: slot {res['next_boot'].upper()} ({res['to_version']}); {res['message']}")
        _print(args, res, text)
    elif args.command == "channel":
        if args.action == "show":
            _print(args, {"channel": cfg.channel}, cfg.channel)
        else:
            res = client.channel_set(args.name)
            _print(args, res, f"channel set to {res['channel']} ({res['file']})")
    elif args.command == "gate":
        res = client.gate(args.timeout, reboot_on_failure=not args.no_reboot)
        _print(args, res, ("health gate passed" if res["ok"] else f"health gate FAILED: {res['reason']}"))
        return 0 if res["ok"] else 1
    elif args.command == "blessed":
        res = client.blessed()
        _print(args, res, f"slot {res['slot'].upper()} blessed={res['blessed']} "
                          f"security-epoch floor {res['security_epoch_floor']}"
                          + (f"; rolled back from {res['rollback']['from_version']}" if res.get("rollback") else ""))
    elif args.command == "allow":
        res = client.allow(args.version)
        _print(args, res, res["message"])
    elif args.command == "checkin":
        res = client.checkin("manual")
        if res is None:
            raise UserError(f"no check-in token: {cfg.checkin_token_file} does not exist or is empty",
                            hint="create a token with the 'checkin' scope on the update server "
                                 "(qx-update-server token create --scopes checkin) and write it there")
        if not res["ok"]:
            raise ExternalError(f"check-in to {cfg.server_url} failed: {res['detail']}",
                                hint="check server_url and the token; updates work without check-ins")
        _print(args, res, f"checked in with {cfg.server_url} ({res['detail']})")
    return 0


main = entry(_main)
