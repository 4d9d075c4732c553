"""The host's journal for its operator: filtered, bounded, read with ``journalctl -o json``.

Call order: :func:`parse_query` (request values → :class:`JournalQuery`, or InvalidField naming the
field) → :func:`argv` → :func:`read` (runs it through :func:`qx_common.run.run` and parses with
:func:`parse`).

Invariants:

* No option injection: every request value goes to journalctl glued to its option in one argument
  (``--unit=VALUE``, ``--grep=VALUE``), never as an argument of its own, and the unit must match
  :data:`UNIT_RE` (no leading ``-``). ``since`` is parsed here and handed on in journalctl's own
  timestamp form, never as the text received.
* Bounded: at most :data:`MAX_LINES` entries, each message cut to :data:`MAX_MESSAGE` characters, and
  at most :data:`MAX_BYTES` of journalctl's output parsed (``truncated`` says when more was cut).
* Never a 500 for the host's state: journalctl missing or failing (no journal, no permission) is
  ``available: false`` with the reason. A message journald kept as bytes (not UTF-8) is decoded with
  U+FFFD; a malformed line is skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Any

from qx_common import run as runner
from qx_common.errors import EnvironmentError_, ExternalError
from qx_node.errors import InvalidField

MAX_LINES = 1000
DEFAULT_LINES = 200
MAX_MESSAGE = 4096
MAX_BYTES = 4 * 1024 * 1024
MAX_GREP = 200
READ_TIMEOUT = 15.0
UNIT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9@._:\\-]{0,127}")
PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


@dataclass(frozen=True)
class JournalQuery:
    unit: str | None = None
    priority: int | None = None  # 0 (emerg) .. 7 (debug): this and more urgent
    grep: str | None = None
    since: dt.datetime | None = None
    lines: int = DEFAULT_LINES


def parse_query(unit: str | None, priority: str | None, grep: str | None, since: str | None,
                lines: str | None) -> JournalQuery:
    if unit is not None and not UNIT_RE.fullmatch(unit):
        raise InvalidField(f"unit: {unit[:40]!r} is not a unit name", field="unit",
                           hint="a systemd unit such as qx-node.service (letters, digits, @._:-; not starting with -)")
    prio: int | None = None
    if priority is not None:
        if priority in PRIORITIES:
            prio = PRIORITIES.index(priority)
        elif priority.isascii() and priority.isdigit() and int(priority) <= 7:
            prio = int(priority)
        else:
            raise InvalidField(f"priority: {priority[:20]!r} is not a syslog priority", field="priority",
                               hint="0..7 or one of " + ", ".join(PRIORITIES))
    if grep is not None and (len(grep) > MAX_GREP or "\x00" in grep or not grep):
        raise InvalidField(f"grep: give 1 to {MAX_GREP} characters without NUL", field="grep",
                           hint="the text to look for in the messages (a PCRE pattern, case-insensitive if lower case)")
    when: dt.datetime | None = None
    if since is not None:
        try:
            when = dt.datetime.fromisoformat(since)
        except ValueError:
            raise InvalidField(f"since: {since[:40]!r} is not an ISO 8601 time", field="since",
                               hint="e.g. 2026-12-07T06:00:00Z") from None
        when = (when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)).astimezone(dt.timezone.utc)
    n = DEFAULT_LINES
    if lines is not None:
        if not (lines.isascii() and lines.isdigit()) or not 1 <= int(lines) <= MAX_LINES:
            raise InvalidField(f"lines: {lines[:20]!r} is not 1..{MAX_LINES}", field="lines",
                               hint=f"how many of the newest entries, 1..{MAX_LINES}")
        n = int(lines)
    return JournalQuery(unit=unit, priority=prio, grep=grep, since=when, lines=n)


def argv(q: JournalQuery, journalctl: str = "journalctl") -> list[str]:
    cmd = [journalctl, "--output=json", "--no-pager", "--quiet", f"--lines={q.lines}"]
    if q.unit is not None:
        cmd.append(f"--unit={q.unit}")
    if q.priority is not None:
        cmd.append(f"--priority={q.priority}")
    if q.grep is not None:
        cmd.append(f"--grep={q.grep}")
    if q.since is not None:
        cmd.append(f"--since={q.since.strftime('%Y-%m-%d %H:%M:%S')} UTC")
    return cmd


def _text(v: Any) -> str:
    """journald's MESSAGE: a string, an array of byte values (not UTF-8), or null (too large)."""
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(b, int) and 0 <= b < 256 for b in v):
        return bytes(v).decode("utf-8", "replace")
    return ""


def parse(out: str, max_bytes: int = MAX_BYTES) -> tuple[list[dict[str, Any]], bool]:
    """Entries (oldest first, as journalctl prints them) and whether output was cut at ``max_bytes``."""
    truncated = len(out) > max_bytes
    entries: list[dict[str, Any]] = []
    for line in out[:max_bytes].splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue  # a line cut at max_bytes, or not JSON at all
        if not isinstance(e, dict):
            continue
        msg = _text(e.get("MESSAGE"))
        ts = e.get("__REALTIME_TIMESTAMP")
        prio = e.get("PRIORITY")
        pid = e.get("_PID")
        entries.append({
            "time": (dt.datetime.fromtimestamp(int(ts) / 1e6, dt.timezone.utc).isoformat()
                     if isinstance(ts, str) and ts.isdigit() else None),
            "priority": int(prio) if isinstance(prio, str) and prio.isdigit() and int(prio) <= 7 else None,
            "unit": _text(e.get("_SYSTEMD_UNIT")) or None,
            "identifier": _text(e.get("SYSLOG_IDENTIFIER")) or None,
            "pid": int(pid) if isinstance(pid, str) and pid.isdigit() else None,
            "message": msg[:MAX_MESSAGE], "message_cut": len(msg) > MAX_MESSAGE})
    return entries, truncated


def read(q: JournalQuery, journalctl: str = "journalctl") -> dict[str, Any]:
    cmd = argv(q, journalctl)
    try:
        proc = runner.run(cmd, timeout=READ_TIMEOUT, check=False)
    except (ExternalError, EnvironmentError_) as e:  # missing program, timeout
        return {"available": False, "reason": f"the journal cannot be read: {e}", "entries": [], "truncated": False}
    err = proc.stderr.strip()
    if proc.returncode != 0:
        if q.grep is not None and not err and not proc.stdout.strip():
            # journalctl --grep exits 1, silently, when nothing matched (systemd 254, checked here).
            return {"available": True, "reason": None, "entries": [], "truncated": False}
        if q.grep is not None and "pattern" in err.lower():
            raise InvalidField(f"grep: journalctl refused the pattern: {err.splitlines()[-1][:200]}", field="grep",
                               hint="a PCRE pattern; escape [ ( * + ? with a backslash to match them literally")
        return {"available": False, "reason": f"the journal cannot be read: journalctl exited with "
                                              f"{proc.returncode}: {err[-500:] or '(no error output)'}",
                "entries": [], "truncated": False}
    entries, truncated = parse(proc.stdout)
    return {"available": True, "reason": None, "entries": entries, "truncated": truncated}
