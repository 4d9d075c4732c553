"""The host's services and the API certificate's fingerprint: the routes on the real server, the
``systemctl show`` parser, and the failure paths of the real command.

systemd is not PID 1 on the machine these tests run on, so the real ``systemctl`` fails here: the route
must then say so (200, ``available: false``, every unit ``unknown``), never a 500. The success path is
driven through :func:`qx_node.hostservices.services` with a small executable that prints what
``systemctl show`` prints (its format: ``Key=Value`` lines, a blank line between units).
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from pathlib import Path

import httpx

from qx_common import hostpaths
from qx_node import hostservices
from qx_node.settings import Settings
from tests.node.conftest import Live, LiveServer

SYSTEMD_IS_INIT = Path("/run/systemd/system").is_dir()  # systemd's own test for "booted with systemd"

SHOW = """Id=qx-node.service
LoadState=loaded
ActiveState=active
SubState=running
UnitFileState=enabled
ActiveEnterTimestamp=Mon 2026-12-07 06:00:01 UTC
MainPID=812
Result=success

Id=libvirtd.service
LoadState=loaded
ActiveState=failed
SubState=failed
UnitFileState=enabled
ActiveEnterTimestamp=
MainPID=0
Result=exit-code

Id=ssh.service
LoadState=not-found
ActiveState=inactive
SubState=dead
UnitFileState=
MainPID=0

Id=qx-update.timer
LoadState=loaded
ActiveState=weird-new-state
SubState=waiting
UnitFileState=enabled
"""


def _program(tmp_path: Path, body: str) -> str:
    p = tmp_path / "systemctl"
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(0o755)
    return str(p)


def test_the_parser_reads_units_by_id() -> None:
    got = hostservices.parse_show(SHOW)
    assert set(got) == {"qx-node.service", "libvirtd.service", "ssh.service", "qx-update.timer"}
    assert got["qx-node.service"]["MainPID"] == "812"
    assert got["libvirtd.service"]["ActiveEnterTimestamp"] == ""
    assert hostservices.parse_show("no equals sign\n\n=\n\nId=\n") == {}


def test_states_come_from_systemctl_and_unknowns_stay_unknown(tmp_path: Path) -> None:
    out = tmp_path / "show.txt"
    out.write_text(SHOW)
    args = tmp_path / "args"
    got = hostservices.services(_program(tmp_path, f'printf "%s\\n" "$@" > {args}; cat {out}\n'))
    assert got["available"] is True and got["reason"] is None
    by = {s["unit"]: s for s in got["services"]}
    assert [s["unit"] for s in got["services"]] == [u for u, _ in hostservices.UNITS]
    assert by["qx-node.service"] == {"unit": "qx-node.service", "purpose": "the node API and this web client",
                                     "state": "active", "sub_state": "running", "enabled": "enabled",
                                     "since": "Mon 2026-12-07 06:00:01 UTC", "main_pid": 812, "result": "success"}
    assert by["libvirtd.service"]["state"] == "failed" and by["libvirtd.service"]["main_pid"] is None
    assert by["ssh.service"]["state"] == "unknown" and by["ssh.service"]["sub_state"] == "not-found"
    assert by["qx-update.timer"]["state"] == "unknown"  # a state this version does not know is not passed on
    assert by["virtlogd.service"]["state"] == "unknown"  # not in systemctl's answer at all
    # The unit names come after "--", from the fixed list only.
    argv = args.read_text().splitlines()
    assert argv[argv.index("--") + 1:] == [u for u, _ in hostservices.UNITS]


def test_a_failing_or_missing_systemctl_is_unknown_with_the_reason(tmp_path: Path) -> None:
    failed = hostservices.services(_program(tmp_path, 'echo "Failed to connect to bus: Host is down" >&2; exit 1\n'))
    assert failed["available"] is False and "Host is down" in failed["reason"]
    assert {s["state"] for s in failed["services"]} == {"unknown"}
    missing = hostservices.services(str(tmp_path / "no-such-systemctl"))
    assert missing["available"] is False and "not found" in missing["reason"]
    garbage = hostservices.services(_program(tmp_path, r"printf 'Id=qx-node.service\nActiveState=\377\376\n'" + "\n"))
    assert garbage["available"] is True and garbage["services"][0]["state"] == "unknown"


def test_the_route_answers_from_the_real_systemctl(live: Live, client: httpx.Client) -> None:
    r = client.get("/v1/host/services")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [s["unit"] for s in body["services"]] == [u for u, _ in hostservices.UNITS]
    if SYSTEMD_IS_INIT:
        assert body["available"] is True, body["reason"]
    else:  # this machine: the real command's failure, said plainly
        assert body["available"] is False and "systemctl" in body["reason"]
        assert {s["state"] for s in body["services"]} == {"unknown"}


def test_the_fingerprint_is_the_served_certificates(live: Live, client: httpx.Client) -> None:
    r = client.get("/v1/host/certificate")
    assert r.status_code == 200, r.text
    ctx = ssl.create_default_context(cafile=str(live.cert))
    port = int(live.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    want = hashlib.sha256(der).hexdigest().upper()
    assert r.json()["sha256"].replace(":", "") == want and r.json()["reason"] is None
    assert httpx.get(live.url + "/v1/host/certificate", verify=ctx).status_code == 401  # behind the token


def test_no_certificate_is_a_reason_not_an_error(tmp_path: Path) -> None:
    got = hostservices.cert_fingerprint(tmp_path / "cert.pem")
    assert got["sha256"] is None and "cannot read" in got["reason"]
    (tmp_path / "cert.pem").write_bytes(b"\xff\xfenot a certificate")
    assert hostservices.cert_fingerprint(tmp_path / "cert.pem")["sha256"] is None


# -- the API token's rotation ------------------------------------------------------------------------
def test_rotation_answers_a_new_token_once_and_refuses_the_old(live: Live, client: httpx.Client) -> None:
    old = live.token
    r = client.post("/v1/host/api-token/rotate")
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    new = r.json()["token"]
    assert new != old and len(new) >= 32
    assert live.node.settings.token_path.read_text().strip() == new  # the file the console reads
    assert client.get("/v1/host").status_code == 401  # the client still sends the old one
    client.headers["Authorization"] = f"Bearer {new}"
    assert client.get("/v1/host").status_code == 200
    assert client.post("/v1/host/api-token/rotate").status_code == 200
    assert client.get("/v1/host").status_code == 401  # and the token before is gone again


def test_rotation_ends_token_sessions_but_the_callers(live: Live) -> None:
    ctx = ssl.create_default_context(cafile=str(live.cert))

    def signed_in() -> tuple[httpx.Client, str]:
        c = httpx.Client(base_url=live.url, verify=ctx, timeout=30)
        r = c.post("/ui/login", json={"token": live.node.token})
        assert r.status_code == 200, r.text
        return c, r.json()["csrf"]

    (mine, csrf), (other, _) = signed_in(), signed_in()
    try:
        r = mine.post("/v1/host/api-token/rotate", headers={"X-CSRF-Token": csrf, "Origin": live.url})
        assert r.status_code == 200, r.text
        assert r.json()["ended_sessions"] == 1
        assert mine.get("/v1/host").status_code == 200
        assert other.get("/v1/host").status_code == 401
        assert other.post("/ui/login", json={"token": live.token}).status_code == 401  # the old token
        assert other.post("/ui/login", json={"token": r.json()["token"]}).status_code == 200
    finally:
        mine.close()
        other.close()


def test_rotation_is_refused_in_lockdown_mode(settings: Settings, tmp_path: Path) -> None:
    flag = hostpaths.lockdown_file(tmp_path / "config")

    def point(app) -> None:  # type: ignore[no-untyped-def]
        app.state.lockdown_file = flag

    with LiveServer(settings, customize=point) as live:
        ctx = ssl.create_default_context(cafile=str(live.cert))
        with httpx.Client(base_url=live.url, verify=ctx, headers=live.auth, timeout=10) as c:
            flag.parent.mkdir(parents=True)
            flag.write_text("")
            r = c.post("/v1/host/api-token/rotate")
            assert r.status_code == 423 and "lockdown mode" in r.json()["error"]
            assert settings.token_path.read_text().strip() == live.token  # unchanged
            assert c.get("/v1/host/certificate").status_code == 200  # reads still work
            flag.unlink()
            assert c.post("/v1/host/api-token/rotate").status_code == 200
