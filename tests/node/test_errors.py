"""libvirt errors → API errors: real ``libvirtError``s provoked on test:///default, through ``translate``.

Each case makes libvirt fail the way it does in production (a missing domain, a power action in the
wrong state, bad XML, a call the driver lacks) and checks the status and message the client gets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import libvirt
import pytest

from qx_node.errors import ApiError, BackendError, Conflict, InvalidField, NotFound
from qx_node.libvirt_conn import ensure_event_loop, mapped, translate
from tests.node.conftest import Api

SCRATCH = "qx-errors-scratch"
SCRATCH_XML = f"<domain type='test'><name>{SCRATCH}</name><memory>1024</memory><os><type>hvm</type></os></domain>"


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    ensure_event_loop()  # also silences libvirt's default print-every-error handler
    c = libvirt.open("test:///default")
    try:
        yield c
    finally:
        try:
            c.lookupByName(SCRATCH).undefine()
        except libvirt.libvirtError:
            pass
        c.close()


def _provoke(call: Callable[[], Any]) -> libvirt.libvirtError:
    with pytest.raises(libvirt.libvirtError) as ei:
        call()
    return ei.value


def _check(err: libvirt.libvirtError, code: str, kind: type, status: int, *words: str) -> ApiError | BackendError:
    assert err.get_error_code() == getattr(libvirt, code), (err.get_error_code(), err.get_error_message())
    out = translate(err, "VM 'x'")
    assert type(out) is kind and out.status == status, (type(out).__name__, out.message)
    assert out.message.startswith("VM 'x'") and "Traceback" not in out.message
    for w in words:
        assert w in out.message + (out.hint or ""), (w, out.message, out.hint)
    return out


def test_missing_domain_is_404(conn: libvirt.virConnect) -> None:
    err = _provoke(lambda: conn.lookupByName("no-such-vm"))
    out = _check(err, "VIR_ERR_NO_DOMAIN", NotFound, 404, "does not exist")
    assert out.hint == "Domain not found"  # libvirt's own words stay available


def test_wrong_state_is_409(conn: libvirt.virConnect) -> None:
    dom = conn.defineXML(SCRATCH_XML)  # defined, shut off
    _check(_provoke(dom.destroy), "VIR_ERR_OPERATION_INVALID", Conflict, 409, "not running")
    # Starting a running domain: this driver says so under a generic code; still a conflict.
    running = conn.lookupByName("test")
    _check(_provoke(running.create), "VIR_ERR_INTERNAL_ERROR", Conflict, 409, "already running")
    dup = SCRATCH_XML.replace(SCRATCH, "test")
    _check(_provoke(lambda: conn.createXML(dup)), "VIR_ERR_OPERATION_FAILED", Conflict, 409, "already exists")


@pytest.mark.parametrize(("xml", "code", "words"), [
    ("<domain", "VIR_ERR_XML_DETAIL", ("refused the configuration", "Start Tag")),
    ("<domain type='test'><name>y</name><memory>1024</memory></domain>", "VIR_ERR_XML_ERROR", ("os <type>",)),
    ("<domain type='bogus'><name>y</name><memory>1024</memory><os><type>hvm</type></os></domain>",
     "VIR_ERR_CONFIG_UNSUPPORTED", ("bogus",)),
])
def test_bad_xml_is_422(conn: libvirt.virConnect, xml: str, code: str, words: tuple[str, ...]) -> None:
    _check(_provoke(lambda: conn.defineXML(xml)), code, InvalidField, 422, *words)


def test_invalid_argument_is_422(conn: libvirt.virConnect) -> None:
    dom = conn.lookupByName("test")
    _check(_provoke(lambda: dom.setVcpus(0)), "VIR_ERR_INVALID_ARG", InvalidField, 422, "must not be zero")
    _check(_provoke(lambda: dom.setMemory(-1)), "VIR_ERR_OVERFLOW", InvalidField, 422, "too large")


def test_unknown_code_is_502(conn: libvirt.virConnect) -> None:
    # VIR_ERR_NO_SUPPORT is in none of the tables: the generic "libvirt failed" answer.
    err = _provoke(lambda: conn.lookupByName("test").blockCommit("vda", None, None))
    _check(err, "VIR_ERR_NO_SUPPORT", BackendError, 502, "libvirt failed", "virDomainBlockCommit")


def test_unknown_code_reaches_the_client_as_json_502(api: Api) -> None:
    """Through the app's error handlers: a JSON body naming the failure, no traceback, no 500."""
    def probe() -> None:
        with mapped("VM 'test'"):
            api.node.lv.conn().lookupByName("test").blockCommit("vda", None, None)

    api.app.add_api_route("/v1/_probe", probe)
    r = api.get("/v1/_probe", headers=api.hdr)
    assert r.status_code == 502, r.text
    body = r.json()
    assert set(body) == {"error", "field", "hint"} and body["field"] is None
    assert body["error"].startswith("VM 'test': libvirt failed: this function is not supported")
    assert "Traceback" not in r.text and "libvirtError" not in r.text
