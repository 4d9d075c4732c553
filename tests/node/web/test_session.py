"""The web client's security model over real HTTPS (no browser): sign-in with the root password (checked
against a real shadow file by libcrypt, as the console checks it) or the API token, the session cookie's
attributes, CSRF on every state-changing request made with the cookie, sign-out, lockout per source and
over all sources, lockdown mode, idle expiry, and the security headers of the client's files."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import httpx
import pytest

from qx_node.api.ui import WEB_DIR
from qx_node.websession import (FIRST_BACKOFF_SECONDS, GLOBAL_FAILURES, IDLE_SECONDS, MAX_SECONDS, SOURCE_FAILURES,
                                Sessions, Throttle)

from .conftest import PASSWORD, WebLive


def sign_in(c: httpx.Client, **secret: str) -> str:
    r = c.post("/ui/login", json=secret)
    assert r.status_code == 200, r.text
    return str(r.json()["csrf"])


def test_password_sign_in_sets_a_strict_cookie_and_the_api_works_with_it(web: WebLive) -> None:
    with web.client() as c:
        assert c.get("/v1/vms").status_code == 401
        r = c.post("/ui/login", json={"password": PASSWORD})
        assert r.status_code == 200 and r.json()["via"] == "password"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("__Host-qx_session=")
        attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
        assert {"path=/", "secure", "httponly", "samesite=strict"} <= attrs
        assert r.headers["cache-control"] == "no-store"
        assert c.get("/v1/vms").json()[0]["name"] == "test"
        assert c.get("/ui/session").json()["csrf"] == r.json()["csrf"]


def test_state_changing_requests_need_the_csrf_token(web: WebLive) -> None:
    with web.client() as c:
        csrf = sign_in(c, password=PASSWORD)
        r = c.post("/v1/vms/test/stop")
        assert r.status_code == 403 and r.json()["field"] == "X-CSRF-Token", r.text
        assert c.post("/v1/vms/test/stop", headers={"X-CSRF-Token": "x" + csrf[1:]}).status_code == 403
        assert c.patch("/v1/vms/test", json={"description": "x"}).status_code == 403
        assert c.delete("/v1/vms/test").status_code == 403
        assert c.get("/v1/vms/test").json()["state"] == "running"  # nothing happened
        # The right token, but from another site's page (Origin): refused as well.
        r = c.post("/v1/vms/test/stop", headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
        assert r.status_code == 403 and r.json()["field"] == "Origin"
        r = c.post("/v1/vms/test/stop", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["state"] == "shutoff"
    # The API token in the Authorization header works as before: no cookie, no CSRF token.
    with web.client(origin=False) as c:
        r = c.post("/v1/vms/test/start", headers={"Authorization": f"Bearer {web.live.token}"})
        assert r.status_code == 200, r.text


def test_token_sign_in_and_sign_out(web: WebLive) -> None:
    with web.client() as c:
        csrf = sign_in(c, token=web.live.token)
        assert c.get("/ui/session").json()["via"] == "token"
        assert c.post("/ui/logout").status_code == 403  # sign-out needs the CSRF token too
        r = c.post("/ui/logout", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and "Max-Age=0" in r.headers["set-cookie"]
        assert c.get("/v1/vms").status_code == 401
        assert c.get("/ui/session").json()["signed_in"] is False


def test_the_old_cookie_is_dead_after_sign_out(web: WebLive) -> None:
    with web.client() as c:
        csrf = sign_in(c, password=PASSWORD)
        sid = c.cookies["__Host-qx_session"]
        c.post("/ui/logout", headers={"X-CSRF-Token": csrf})
    with web.client() as c2:
        r = c2.get("/v1/vms", headers={"Cookie": f"__Host-qx_session={sid}"})
        assert r.status_code == 401 and "ended" in r.json()["error"]


def test_wrong_passwords_lock_the_source_out_even_for_the_right_one(web: WebLive) -> None:
    with web.client() as c:
        for _ in range(SOURCE_FAILURES):
            r = c.post("/ui/login", json={"password": "wrong"})
            assert r.status_code == 401 and r.json()["error"] == "wrong password"
        r = c.post("/ui/login", json={"password": PASSWORD})
        assert r.status_code == 429, r.text
        assert int(r.headers["retry-after"]) >= FIRST_BACKOFF_SECONDS
        assert c.post("/ui/login", json={"token": web.live.token}).status_code == 429
        assert "__Host-qx_session" not in c.cookies
    # Another source is not locked out by this one (the global limit is higher).
    with web.client(source="127.0.0.2") as other:
        sign_in(other, password=PASSWORD)


def test_lockdown_disables_password_sign_in_and_ends_password_sessions(web: WebLive) -> None:
    with web.client() as c, web.client() as t:
        sign_in(c, password=PASSWORD)
        sign_in(t, token=web.live.token)
        web.lockdown.write_text("")
        r = c.post("/ui/login", json={"password": PASSWORD})
        assert r.status_code == 423 and "lockdown" in r.json()["error"]
        r = c.get("/v1/vms")
        assert r.status_code == 401 and "lockdown" in r.json()["error"]
        assert t.get("/v1/vms").status_code == 200  # a token session keeps the token's rights
        sign_in(c, token=web.live.token)
        web.lockdown.unlink()
        sign_in(c, password=PASSWORD)


@pytest.mark.parametrize("body", [b"", b"[]", b'{"password": 1}', b'{"password": "a", "token": "b"}',
                                  b'{"user": "root"}', b"x" * 5000])
def test_bad_sign_in_bodies_are_refused_by_name(web: WebLive, body: bytes) -> None:
    with web.client() as c:
        r = c.post("/ui/login", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code in (413, 422) and r.json()["field"] == "body", r.text


def test_a_cross_origin_sign_in_is_refused(web: WebLive) -> None:
    with web.client() as c:
        r = c.post("/ui/login", json={"password": PASSWORD}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and "__Host-qx_session" not in c.cookies


def test_websockets_never_take_the_cookie(web: WebLive) -> None:
    """A console WebSocket needs its one-time ticket (got with a CSRF-checked POST), not the cookie."""
    with web.client() as c:
        sign_in(c, password=PASSWORD)
        r = c.get("/v1/vms/test/console/vnc", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                                                        "Sec-WebSocket-Version": "13",
                                                        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
        assert r.status_code == 401, r.text


def test_client_files_have_strict_security_headers(web: WebLive) -> None:
    with web.client() as c:
        for path in ("/", "/ui/app.js", "/ui/app.css", "/ui/vendor/novnc/core/rfb.js"):
            r = c.get(path)
            assert r.status_code == 200, path
            csp = r.headers["content-security-policy"]
            assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
            assert "strict-transport-security" not in r.headers
        r = c.get("/ui/app.js")
        again = c.get("/ui/app.js", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        assert c.get("/ui/../auth.py").status_code in (401, 404)
        assert c.get("/ui/vendor.sh").status_code == 404
        assert c.post("/ui/app.js").status_code == 405


def test_the_only_inline_script_is_the_import_map_allowed_by_its_hash() -> None:
    html = (WEB_DIR / "index.html").read_text()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    inline = [(attrs, body) for attrs, body in scripts if "src=" not in attrs]
    assert [a for a, _ in inline] == [' type="importmap"']
    json.loads(inline[0][1])
    assert " style=" not in html and "on" + "click=" not in html.lower()


def test_idle_sessions_expire_and_background_requests_do_not_keep_them() -> None:
    now = [1000.0]
    s = Sessions(clock=lambda: now[0])
    sid, sess = s.create("password")
    now[0] += IDLE_SECONDS - 1
    assert s.lookup(sid) is sess
    s.touch(sess)  # a request the user made
    now[0] += IDLE_SECONDS - 1
    assert s.lookup(sid) is sess  # polling (lookup without touch) does not extend it ...
    now[0] += 2
    assert s.lookup(sid) is None  # ... so it ends idle
    sid, sess = s.create("token")
    for _ in range(int(MAX_SECONDS // (IDLE_SECONDS / 2)) + 1):
        now[0] += IDLE_SECONDS / 2
        if s.lookup(sid) is None:
            break
        s.touch(sess)
    assert s.lookup(sid) is None and now[0] - sess.created >= MAX_SECONDS


def test_global_back_off_refuses_every_source_and_grows() -> None:
    now = [0.0]
    t = Throttle(clock=lambda: now[0])
    for i in range(GLOBAL_FAILURES - 1):
        t.failed(f"10.0.{i}.1")  # one failure each: no single source reaches its limit
    assert t.check("10.9.9.9") == 0
    t.failed("10.0.99.1")
    first = t.check("10.9.9.9")
    assert first == FIRST_BACKOFF_SECONDS
    now[0] += first
    assert t.check("10.9.9.9") == 0
    t.failed("10.0.100.1")
    assert t.check("10.9.9.9") == 2 * FIRST_BACKOFF_SECONDS
    t.succeeded("10.0.100.1")
    assert t.check("10.0.100.1") == 2 * FIRST_BACKOFF_SECONDS  # a success clears the source, not the global count


def test_vendored_files_are_the_locked_packages() -> None:
    """vendor/SHA256SUMS (written by vendor.sh from package-lock.json) matches every vendored file, and
    package.json pins exactly the versions package-lock.json resolved."""
    vendor = WEB_DIR / "vendor"
    sums = dict(reversed(line.split("  ", 1)) for line in (vendor / "SHA256SUMS").read_text().splitlines())
    on_disk = {p.relative_to(vendor).as_posix() for p in vendor.rglob("*") if p.is_file()} - {"SHA256SUMS"}
    assert set(sums) == on_disk
    for name, digest in sums.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    pins = json.loads((WEB_DIR / "package.json").read_text())["dependencies"]
    lock = json.loads((WEB_DIR / "package-lock.json").read_text())["packages"]
    assert {k: lock[f"node_modules/{k}"]["version"] for k in pins} == pins
    assert all(lock[f"node_modules/{k}"]["integrity"].startswith("sha512-") for k in pins)


def test_the_client_calls_only_routes_of_the_node_api(web: WebLive) -> None:
    """Nothing the client does is possible only through it: every path it calls is an API route."""
    src = (WEB_DIR / "app.js").read_text()
    called = set(re.findall(r'(?:api\("[A-Z]+", |fetch\(|EventSource\(|xhr\.open\("PUT", )[`"](/[^`"?]*)', src))
    assert called, "no calls found: the pattern no longer matches app.js"
    with web.client(origin=False) as c:
        routes = set(c.get("/openapi.json", headers={"Authorization": f"Bearer {web.live.token}"}).json()["paths"])
    own = {"/ui/login", "/ui/logout", "/ui/session"}
    for path in called - own:
        client = "[^/]+".join(re.escape(part) for part in re.split(r"\$\{[^}]*\}", path))
        assert any(re.fullmatch(client, re.sub(r"\{[^}]+\}", "n", r)) for r in routes), path


def test_session_state_is_in_memory_only(web: WebLive, tmp_path: Path) -> None:
    """No session or password material is written anywhere under the node's state directory."""
    with web.client() as c:
        sign_in(c, password=PASSWORD)
        sid = c.cookies["__Host-qx_session"]
    for f in tmp_path.rglob("*"):
        if f.is_file() and f.name != "shadow":
            data = f.read_bytes()
            assert sid.encode() not in data and PASSWORD.encode() not in data, f
