"""The host's journal through the API: the route on the real server with the real journalctl (this
machine has no journal files: journalctl answers nothing, and --grep exits 1 silently), hostile query
values, and the parser and argv on output in journalctl's ``-o json`` form, printed by a small
executable standing in for journalctl (no journal can be written here: no journald, no
systemd-journal-remote). What is NOT proven here: real entries from a real journald.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from qx_node import journal
from qx_node.errors import InvalidField
from tests.node.conftest import Live

ENTRIES = [
    {"__REALTIME_TIMESTAMP": "1796623200000000", "PRIORITY": "6", "_SYSTEMD_UNIT": "qx-node.service",
     "SYSLOG_IDENTIFIER": "qx-node", "_PID": "812", "MESSAGE": "node: started"},
    {"__REALTIME_TIMESTAMP": "1796623201000000", "PRIORITY": "3", "_SYSTEMD_UNIT": "libvirtd.service",
     "MESSAGE": [104, 105, 255]},  # journald keeps a message that is not UTF-8 as an array of bytes
    {"__REALTIME_TIMESTAMP": "x", "MESSAGE": None, "PRIORITY": "9"},  # too large to keep: null
    {"MESSAGE": "y" * (journal.MAX_MESSAGE + 10)},
]


def _program(tmp_path: Path, body: str) -> str:
    p = tmp_path / "journalctl"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def test_the_parser_keeps_what_journald_gives_and_bounds_it() -> None:
    out = "\n".join(json.dumps(e) for e in ENTRIES) + "\nnot json\n[1]\n"
    got, cut = journal.parse(out)
    assert not cut and len(got) == 4
    assert got[0] == {"time": "2026-12-07T06:00:00+00:00", "priority": 6, "unit": "qx-node.service",
                      "identifier": "qx-node", "pid": 812, "message": "node: started", "message_cut": False}
    assert got[1]["message"] == "hi\ufffd" and got[1]["priority"] == 3
    assert got[2]["message"] == "" and got[2]["time"] is None and got[2]["priority"] is None
    assert len(got[3]["message"]) == journal.MAX_MESSAGE and got[3]["message_cut"] is True
    few, cut = journal.parse(out, max_bytes=len(json.dumps(ENTRIES[0])) + 5)
    assert cut and len(few) == 1


def test_hostile_values_never_become_options() -> None:
    for unit in ("--help", "-x", "a b", "x" * 200, "", "q\n--all"):
        with pytest.raises(InvalidField) as e:
            journal.parse_query(unit, None, None, None, None)
        assert e.value.field == "unit"
    for field, args in (("priority", (None, "8", None, None, None)), ("priority", (None, "-1", None, None, None)),
                        ("priority", (None, "٣", None, None, None)), ("lines", (None, None, None, None, "0")),
                        ("lines", (None, None, None, None, "1001")), ("lines", (None, None, None, None, "-5")),
                        ("since", (None, None, None, "--help", None)), ("grep", (None, None, "a\x00b", None, None)),
                        ("grep", (None, None, "", None, None))):
        with pytest.raises(InvalidField) as e:
            journal.parse_query(*args)  # type: ignore[arg-type]
        assert e.value.field == field
    q = journal.parse_query("qx-node.service", "err", "--help", "2026-12-07T07:00:00+01:00", "5")
    assert journal.argv(q) == ["journalctl", "--output=json", "--no-pager", "--quiet", "--lines=5",
                               "--unit=qx-node.service", "--priority=3", "--grep=--help",
                               "--since=2026-12-07 06:00:00 UTC"]


def test_read_runs_journalctl_with_the_filters(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    out.write_text("\n".join(json.dumps(e) for e in ENTRIES[:2]) + "\n")
    args = tmp_path / "args"
    prog = _program(tmp_path, f'printf "%s\\n" "$@" > {args}; cat {out}\n')
    got = journal.read(journal.parse_query("libvirtd.service", "3", None, None, "2"), prog)
    assert got["available"] is True and [e["priority"] for e in got["entries"]] == [6, 3]
    assert "--unit=libvirtd.service" in args.read_text().splitlines()
    failed = journal.read(journal.JournalQuery(), _program(tmp_path, "echo 'No journal files were found.' >&2; exit 1\n"))
    assert failed["available"] is False and "No journal files" in failed["reason"]
    missing = journal.read(journal.JournalQuery(), str(tmp_path / "none"))
    assert missing["available"] is False and "not found" in missing["reason"]


def test_the_route_reads_the_real_journal(live: Live, client: httpx.Client) -> None:
    r = client.get("/v1/host/journal", params={"unit": "qx-node.service", "priority": "info", "lines": "10"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["entries"], list) and len(body["entries"]) <= 10
    # --grep on an empty journal: journalctl exits 1 without a word, which is "nothing found", not a failure.
    r = client.get("/v1/host/journal", params={"grep": "--help"})
    assert r.status_code == 200 and r.json()["available"] is True, r.text
    for params in ({"unit": "--help"}, {"unit": "-o"}, {"lines": "100000"}, {"since": "yesterday"},
                   {"priority": "9"}):
        r = client.get("/v1/host/journal", params=params)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["field"] == next(iter(params))
    r = client.get("/v1/host/journal?unit=%FF%FE&grep=%ED%A0%80")  # not UTF-8: refused, never a 500
    assert r.status_code == 422, r.text
    r = client.get("/v1/host/journal", params={"grep": "["})  # journalctl's own refusal, named
    assert r.status_code == 422 and r.json()["field"] == "grep", r.text
