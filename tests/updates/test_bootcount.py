"""Boot counting on a real ESP directory: entries with +3, trial boots, blessing, automatic rollback.

systemd-boot and systemd-bless-boot cannot run here; :class:`Loader` does what they do to the ESP
(documented behaviour: pick the first entry by boot_order, rename ``+L-D`` to ``+(L-1)-(D+1)`` on boot,
drop the counter when blessed). Everything else is the real CLI.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from qx_update import bootentry as be
from qx_update.client import reboot_plan
from qx_update.config import in_window
from tests.updates.conftest import Host, payload
from tests.updates.tufrepo import TufRepo

ALL = ["dev", "beta", "stable"]


class Loader:
    """systemd-boot's boot counting and systemd-bless-boot, as they act on the ESP's files."""

    def __init__(self, esp: Path) -> None:
        self.dir = esp / be.ENTRIES_DIR

    def _entries(self) -> dict[be.EntryName, Path]:
        return {n: p for p in self.dir.iterdir() if (n := be.parse_entry_name(p.name))}

    def boot(self) -> str:
        entries = self._entries()
        versions = {n: be.parse_entry(p.read_text())["version"] for n, p in entries.items()}
        chosen = be.boot_order(versions)[0]
        if chosen.tries_left is not None and chosen.tries_left > 0:
            new = be.EntryName(chosen.slot, chosen.tries_left - 1, (chosen.tries_done or 0) + 1)
            entries[chosen].rename(self.dir / new.filename)
        return chosen.slot

    def bless(self, slot: str) -> None:
        for n, p in self._entries().items():
            if n.slot == slot and n.tries_left is not None:
                p.rename(self.dir / be.EntryName(slot).filename)


def health_server(ok: bool) -> ThreadingHTTPServer:
    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = {"status": "ok" if ok else "degraded",
                    "components": {"libvirt": {"ok": ok, "detail": "qemu:///system: " + ("up" if ok else "libvirtd not running")},
                                   "console": {"ok": True, "detail": "tty1"}}}
            raw = json.dumps(body).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _url(srv: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/health"


def test_blessed_boot_raises_floor(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(40), channels=ALL, security_epoch=2)
    host.json("apply")
    assert "quantix-b+3.conf" in host.entries()
    loader = Loader(host.esp)
    srv = health_server(True)
    try:
        assert loader.boot() == "b"
        host.write_config(running="b", health_url=_url(srv), gate_timeout=30)
        st = host.json("status")
        assert st["slots"]["b"]["tries_left"] == 2 and st["slots"]["b"]["tries_done"] == 1
        assert "on trial" in st["message"]
        assert host.json("gate")["ok"] is True
        # blessed before systemd-bless-boot ran: the floor stays
        assert host.json("blessed")["security_epoch_floor"] == 0
        loader.bless("b")
        res = host.json("blessed")
        assert res["blessed"] and res["security_epoch_floor"] == 2
        st = host.json("status")
        assert st["pending"] is None and st["slots"]["b"]["blessed"] and st["default_slot"] == "b"
        # Operator rollback: slot A (1.0.0, blessed) boots next, by the same rule as an automatic one.
        rb = host.json("rollback")
        assert rb["rolled_back"] and rb["next_boot"] == "a"
        assert loader.boot() == "a"
    finally:
        srv.shutdown()


def test_failing_gate_rolls_back_after_three_tries_with_reason(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(41), channels=ALL, security_epoch=5)
    host.json("apply")
    loader = Loader(host.esp)
    srv = health_server(False)
    try:
        for attempt in range(3):
            assert loader.boot() == "b", attempt
            host.write_config(running="b", health_url=_url(srv), gate_timeout=0.3)
            g = host.run("--json", "gate", "--no-reboot", check=False)
            assert g.returncode == 1 and "libvirtd not running" in json.loads(g.stdout)["reason"]
        assert "quantix-b+0-3.conf" in host.entries()
        assert loader.boot() == "a"          # tries ran out: systemd-boot falls back by itself
        host.write_config(running="a")
        res = host.json("blessed")
        assert res["rollback"]["from_version"] == "1.1.0"
        st = host.json("status")
        assert st["message"].startswith("rolled back from 1.1.0 (slot B), because libvirt: qemu:///system: libvirtd not running")
        assert st["security_epoch_floor"] == 0, "the floor is raised only after a blessed boot"
        assert st["slots"]["b"]["bad"] and st["default_slot"] == "a"
        assert "rolled back from 1.1.0" in host.run("status").stdout
    finally:
        srv.shutdown()


def test_rollback_without_gate_verdict_says_so(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(42), channels=ALL)
    host.json("apply")
    loader = Loader(host.esp)
    for _ in range(3):
        assert loader.boot() == "b"        # e.g. a kernel panic: the gate never ran
    assert loader.boot() == "a"
    st = host.json("status")
    assert "did not reach boot-complete.target" in st["message"]


def test_cancel_an_update_not_booted_yet(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(43), channels=ALL)
    host.json("apply")
    res = host.json("rollback")
    assert res["rolled_back"] is False and res["cancelled"] == "1.1.0" and res["next_boot"] == "a"
    assert Loader(host.esp).boot() == "a"


def test_rollback_refused_without_a_good_other_slot(host: Host) -> None:
    proc = host.run("rollback", check=False)
    assert proc.returncode == 2 and "no bootable release" in proc.stderr


def test_newest_good_entry_boots_first_and_bad_ones_last() -> None:
    names = {be.EntryName("a"): "1.0.0", be.EntryName("b", 3): "1.1.0"}
    assert be.boot_order(names)[0].slot == "b"
    names = {be.EntryName("a"): "1.0.0", be.EntryName("b", 0, 3): "1.1.0"}
    assert be.boot_order(names)[0].slot == "a"
    assert be.mark_bad(be.EntryName("b", 2, 1)).filename == "quantix-b+0-3.conf"
    assert be.mark_bad(be.EntryName("a")).filename == "quantix-a+0.conf"


def test_maintenance_window() -> None:
    at = dt.datetime(2026, 1, 1, 3, 0)
    assert in_window("", at) and reboot_plan("", at) is None
    assert in_window("02:00-04:00", at) and not in_window("04:00-05:00", at)
    assert in_window("23:00-04:00", at)          # spans midnight
    assert reboot_plan("04:00-05:00", at) == "04:00"


def test_a_release_rolled_back_from_is_never_applied_again_until_allowed(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(43), channels=ALL)
    host.json("apply")
    loader = Loader(host.esp)
    for _ in range(3):
        assert loader.boot() == "b"        # the trial boots fail (gate or panic): tries run out
    assert loader.boot() == "a"
    host.write_config(running="a")
    assert host.json("blessed")["rollback"]["from_version"] == "1.1.0"
    # The daily timer's check/apply must not loop the host into the broken release.
    chk = host.json("check")
    assert chk["available"] is None
    assert any(s["version"] == "1.1.0" and "rolled back" in s["reason"] for s in chk["skipped"]), chk["skipped"]
    again = host.json("apply")
    assert again["applied"] is None, again
    assert "quantix-b+3.conf" not in host.entries()
    st = host.json("status")
    assert "1.1.0" in st["refused"] and "refused: 1.1.0" in host.run("status").stdout
    # A newer release is offered as usual; the operator may also retry the refused one.
    res = host.json("allow", "1.1.0")
    assert res["allowed"] == "1.1.0" and host.json("check")["available"]["version"] == "1.1.0"
    bad = host.run("allow", "9.9.9", check=False)
    assert bad.returncode == 2 and "not refused" in bad.stderr
