"""The OpenAPI document against the real server: it declares what the API does (bearer security,
the ``{"error", "field", "hint"}`` error body, path parameter patterns, request and response
schemas), and a schema-driven fuzz run over every documented operation finds no 5xx.

The fuzzer (hypothesis; schemathesis is not in requirements.lock) builds each request from the
document alone: path parameters from their patterns (or a small set of names, so that requests
meet each other's objects), query parameters from their schemas plus unknown ones, bodies from
the request body schema — valid ones, and ones broken on purpose (a wrong type, a missing or an
extra key, any JSON at all). It runs on the live node (uvicorn, TLS, test:///default), several
requests per example on one keep-alive connection, and checks every answer against the document: its
status is documented for that operation, its media type too, and a JSON body fits the schema
(:func:`schema_errors`, a validator of the JSON Schema subset the document uses: jsonschema is not in
requirements.lock, and a keyword it does not know fails rather than passes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.node.conftest import Live
from tests.node.test_vmspec import json_values

REF = "#/components/schemas/"


@pytest.fixture
def doc(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def _ops(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def test_security_scheme_and_public_health(doc: dict[str, Any]) -> None:
    assert doc["components"]["securitySchemes"] == {"bearerAuth": {
        "type": "http", "scheme": "bearer", "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"]}}
    assert doc["security"] == [{"bearerAuth": []}]
    for method, path, op in _ops(doc):
        if path == "/health":
            assert op["security"] == []
        else:
            assert "security" not in op or op["security"] == [{"bearerAuth": []}], (method, path)
            assert op["responses"]["401"]["content"]["application/json"]["schema"] == {"$ref": REF + "Error"}


def test_errors_are_documented_as_they_are_sent(doc: dict[str, Any], client: httpx.Client) -> None:
    assert "HTTPValidationError" not in json.dumps(doc) and "ValidationError" not in doc["components"]["schemas"]
    error = doc["components"]["schemas"]["Error"]
    assert set(error["required"]) == set(error["properties"]) == {"error", "field", "hint"}
    for method, path, op in _ops(doc):
        for status, resp in op["responses"].items():
            if int(status) >= 400 and path != "/health":
                assert resp["content"]["application/json"]["schema"] == {"$ref": REF + "Error"}, (method, path, status)
        if path != "/health":
            assert "422" in op["responses"], (method, path)
    # And the server really sends that shape, for each status the document names.
    samples = {
        401: client.get("/v1/host", headers={"Authorization": "Bearer wrong"}),
        404: client.get("/v1/vms/nothing-here"),
        409: client.post("/v1/vms/test/start"),
        413: client.post("/v1/vms?wait=true", content=b"x" * (2 * 1024 * 1024)),
        422: client.get("/v1/vms", params={"colour": "red"}),
    }
    for status, r in samples.items():
        assert r.status_code == status, (status, r.text)
        body = r.json()
        assert set(body) == {"error", "field", "hint"} and isinstance(body["error"], str), body


def test_path_parameters_have_patterns(doc: dict[str, Any]) -> None:
    seen = 0
    for method, path, op in _ops(doc):
        for p in op.get("parameters", []):
            if p["in"] != "path":
                continue
            seen += 1
            pattern = p["schema"].get("pattern")
            assert pattern, (method, path, p["name"])
            assert not re.fullmatch(pattern, "a/b") and not re.fullmatch(pattern, "../x")
            assert not re.fullmatch(pattern, "ok\n"), "JSON Schema '$' must not allow a newline"
    assert seen >= 20


def test_bodies_and_success_answers_have_schemas(doc: dict[str, Any]) -> None:
    bodies = {(m, p) for m, p, op in _ops(doc) if "requestBody" in op}
    assert {("post", "/v1/vms"), ("patch", "/v1/vms/{name}"), ("post", "/v1/storage/volumes"),
            ("put", "/v1/storage/isos/{name}"), ("post", "/v1/vms/{name}/snapshots")} <= bodies
    get_vm = doc["paths"]["/v1/vms/{name}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert get_vm == {"$ref": REF + "Vm"}
    assert doc["components"]["schemas"]["VmSummary"]["properties"]["state"]["enum"]
    # Every success answer of every route has a schema of its own — never FastAPI's placeholder for a
    # "-> dict[str, Any]" route (an object with any properties, titled "Response ...").
    for method, path, op in _ops(doc):
        ok = {st: r for st, r in op["responses"].items() if st.startswith("2")}
        assert ok, (method, path)
        for status, resp in ok.items():
            content = resp.get("content")
            assert content, (method, path, status)
            for media, body in content.items():
                schema = body.get("schema", {})
                assert schema and not schema.get("title", "").startswith("Response"), (method, path, status, media)
                if media == "application/json":
                    assert "$ref" in schema or "required" in schema or schema.get("type") == "array", (method, path)


def test_long_operations_are_documented_as_tasks_with_wait(doc: dict[str, Any]) -> None:
    """Create, clone, snapshot (qx_node.api.longops): 202 with the Task by default, 201 with the result
    when wait=true; no 'background' any more."""
    for path, result in (("/v1/vms", "Vm"), ("/v1/vms/{name}/clone", "Vm"), ("/v1/vms/{name}/snapshots", "Snapshot")):
        op = doc["paths"][path]["post"]
        assert op["responses"]["202"]["content"]["application/json"]["schema"] == {"$ref": REF + "Task"}, path
        assert op["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": REF + result}, path
        query = {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}
        assert set(query) == {"wait"} and query["wait"]["schema"]["default"] is False, (path, query)
        assert "202" in op["summary"] and "wait=true" in op["summary"], op["summary"]


# -- validating answers against the document ---------------------------------------------------------
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
_IGNORED = {"description", "title", "format"}


def schema_errors(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (the JSON Schema subset our document uses). A keyword this does
    not know is an error itself, so the document cannot grow a rule this check silently skips."""
    unknown = set(schema) - _IGNORED - {"$ref", "allOf", "enum", "const", "type", "properties", "required",
                                        "additionalProperties", "items", "pattern", "minimum", "maximum",
                                        "maxLength", "minLength"}
    if unknown:
        return [f"{where}: the schema uses {sorted(unknown)}, which this validator does not check"]
    if "$ref" in schema:
        return schema_errors(doc, _resolve(doc, {"$ref": schema["$ref"]}), value, where)
    errs: list[str] = []
    for sub in schema.get("allOf", []):
        errs += schema_errors(doc, sub, value, where)
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errs.append(f"{where}: {value!r} is not {schema['const']!r}")
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        fits = any((k == "integer" and isinstance(value, int) and not isinstance(value, bool))
                   or (k == "number" and isinstance(value, (int, float)) and not isinstance(value, bool))
                   or (k in _TYPES and isinstance(value, _TYPES[k])) for k in kinds)
        if not fits:
            return errs + [f"{where}: {type(value).__name__} {value!r:.80} is not {kinds}"]
    if isinstance(value, dict):
        props = schema.get("properties", {})
        errs += [f"{where}: '{k}' is missing" for k in schema.get("required", []) if k not in value]
        extra = schema.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                errs += schema_errors(doc, props[k], v, f"{where}.{k}")
            elif extra is False:
                errs.append(f"{where}: '{k}' is not allowed")
            elif isinstance(extra, dict):
                errs += schema_errors(doc, extra, v, f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errs += schema_errors(doc, schema["items"], v, f"{where}[{i}]")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(f"{where}: {value!r:.80} does not match {schema['pattern']}")
        if len(value) > schema.get("maxLength", len(value)) or len(value) < schema.get("minLength", 0):
            errs.append(f"{where}: length {len(value)} is out of bounds")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < schema.get("minimum", value) or value > schema.get("maximum", value):
            errs.append(f"{where}: {value} is out of bounds")
    return errs


def answer_errors(doc: dict[str, Any], method: str, template: str, r: httpx.Response) -> list[str]:
    """Where an answer differs from what the document says this operation answers."""
    op = doc["paths"][template][method.lower()]
    resp = op["responses"].get(str(r.status_code))
    if resp is None:
        return [f"status {r.status_code} is not documented (documented: {sorted(op['responses'])})"]
    media = r.headers.get("content-type", "").split(";")[0].strip()
    content = resp.get("content", {})
    if media not in content:
        return [f"status {r.status_code}: media type {media!r} is not documented ({sorted(content)})"]
    if media != "application/json":
        return []
    return schema_errors(doc, content[media]["schema"], r.json())


def test_the_validator_catches_a_wrong_answer(doc: dict[str, Any]) -> None:
    vm = {"name": "x", "uuid": "u", "state": "running", "vcpus": 1, "memory_mib": 64, "autostart": False}
    assert schema_errors(doc, {"$ref": REF + "VmSummary"}, vm) == []
    assert schema_errors(doc, {"$ref": REF + "VmSummary"}, {**vm, "state": "sleepy"})
    assert schema_errors(doc, {"$ref": REF + "VmSummary"}, {**vm, "vcpus": True})
    assert schema_errors(doc, {"$ref": REF + "VmSummary"}, {k: v for k, v in vm.items() if k != "uuid"})
    assert schema_errors(doc, {"$ref": REF + "Error"}, {"error": "e", "field": None, "hint": None, "x": 1})
    assert schema_errors(doc, {"type": "string", "oneOf": []}, "x")  # a keyword it does not know


@pytest.mark.parametrize("path", ["/v1/host", "/v1/host/stats", "/v1/hardware", "/v1/storage/pool", "/health",
                                  "/v1/vms", "/v1/networks", "/v1/host/capacity", "/v1/host/settings", "/metrics",
                                  "/v1/host/services", "/v1/host/certificate"])
def test_read_only_answers_match_the_document(doc: dict[str, Any], client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code in (200, 503), r.text  # /health: 503 names a component that is not ok (same body)
    assert answer_errors(doc, "GET", path, r) == []


# -- the fuzz run ---------------------------------------------------------------------------------
VM_NAMES = ["test", "fz-a", "fz-b"]
VOLUME_NAMES = ["fz.qcow2", "fz-raw.img", "fz-a-disk0.qcow2", "fz.iso"]
SNAP_NAMES = ["s1", "s2"]
TASK_IDS = ["0" * 32] * 5  # then the ids of real tasks, refreshed by _ensure_objects


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].removeprefix(REF)]
    return schema


def from_schema(doc: dict[str, Any], schema: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
    """Values valid for a (JSON-Schema subset) schema: enum, string (pattern, maxLength), integer
    (minimum, maximum), boolean, array (items, maxItems), object (properties, required)."""
    schema = _resolve(doc, schema)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        if schema.get("format") == "binary":
            return st.binary(max_size=2048)
        if name in ("name",) and schema.get("pattern"):
            pool = VOLUME_NAMES if "+" in schema["pattern"] else VM_NAMES + SNAP_NAMES
            return st.sampled_from(pool) | st.from_regex(schema["pattern"], fullmatch=True)
        if name in ("volume", "cdrom", "kernel", "initrd"):
            return st.sampled_from(VOLUME_NAMES) | st.from_regex(schema["pattern"], fullmatch=True)
        if schema.get("pattern"):
            return st.from_regex(schema["pattern"], fullmatch=True)
        size = min(schema.get("maxLength", 50), 50)
        printable = st.characters(blacklist_categories=("Cc", "Cs"))
        return st.text(printable, max_size=size) | st.text(max_size=size)
    if kind == "integer":
        lo, hi = schema.get("minimum", -(2**40)), schema.get("maximum", 2**40)
        small = st.integers(lo, min(hi, lo + 8))
        return small | st.integers(lo, hi)
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(from_schema(doc, schema.get("items", {}), name), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(doc, v, k) for k, v in props.items() if k in required},
            optional={k: from_schema(doc, v, k) for k, v in props.items() if k not in required},
        ).filter(lambda d: len(d) >= schema.get("minProperties", 0))
    return json_values


def _broken(doc: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A body that breaks the schema on purpose."""
    schema = _resolve(doc, schema)
    good = from_schema(doc, schema)
    props = list(schema.get("properties", {}))
    out = [json_values]
    if props:
        out.append(st.builds(lambda d, k, v: {**d, k: v}, good, st.sampled_from(props), json_values))  # wrong type
        out.append(st.builds(lambda d, k: {x: y for x, y in d.items() if x != k}, good, st.sampled_from(props)))
        out.append(st.builds(lambda d, k: {**d, k: 1}, good, st.text(min_size=1, max_size=12)))  # unknown key
    return st.one_of(out)


def _minimal(doc: dict[str, Any], schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """The required fields and at most two others: bodies that have a chance to succeed."""
    schema = _resolve(doc, schema)
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    if not props:
        return from_schema(doc, schema)
    optional = sorted(set(props) - required - {"disks", "nics", "kernel", "initrd", "cmdline", "cdrom"})

    def build(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        return {**base, **extra}

    extras = st.lists(st.sampled_from(optional), max_size=2, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: from_schema(doc, props[k], k) for k in keys})) if optional else st.just({})
    base = st.fixed_dictionaries({k: from_schema(doc, props[k], k) for k in required})
    return st.builds(build, base, extras).filter(lambda d: len(d) >= schema.get("minProperties", 0))


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for method, path, op in _ops(doc):
        content = op["responses"].get("200", {}).get("content", {})
        if "text/event-stream" in content:
            continue  # an endless stream: test_live covers it
        out.append((method, path, op))
    return out


@st.composite
def requests_(draw: Any, doc: dict[str, Any]) -> tuple[str, str, dict[str, Any], Any]:
    method, path, op = draw(st.sampled_from(_operations(doc)))
    values = {}
    query: dict[str, Any] = {}
    for p in op.get("parameters", []):
        schema = p["schema"]
        if p["in"] == "path":
            if p["name"] == "snapshot":
                pool = SNAP_NAMES
            elif p["name"] == "id":
                pool = list(TASK_IDS)
            elif p["name"] == "dev":
                pool = ["vda", "vdb", "sda"]
            elif p["name"] == "mac":
                pool = ["52:54:00:00:00:01"]
            elif path.startswith("/v1/vms"):
                pool = VM_NAMES
            else:
                pool = VOLUME_NAMES
            strat = st.sampled_from(pool) | st.from_regex(schema["pattern"], fullmatch=True)
            values[p["name"]] = draw(strat)
        elif p["in"] == "query" and draw(st.booleans()):
            query[p["name"]] = draw(from_schema(doc, schema) | st.text(max_size=8))
    if draw(st.integers(0, 9)) == 9:
        query[draw(st.text(min_size=1, max_size=10))] = draw(st.text(max_size=10))  # unknown
    target = path.format(**values)
    kw: dict[str, Any] = {"params": {k: ("true" if v else "false") if isinstance(v, bool) else v
                                     for k, v in query.items()}}
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" in content:
        schema = content["application/json"]["schema"]
        body = draw(st.one_of(_minimal(doc, schema), from_schema(doc, schema), _broken(doc, schema)))
        kw["content"] = json.dumps(body).encode()
        kw["headers"] = {"content-type": "application/json"}
    elif "application/octet-stream" in content:
        kw["content"] = draw(st.binary(max_size=4096))
    return method.upper(), target, kw, path


def _ensure_objects(c: httpx.Client) -> None:
    """Bring back what earlier requests deleted, so that requests keep meeting real objects: two
    volumes, a running VM with a disk and a snapshot, a shut-off VM."""
    for name, fmt in (("fz.qcow2", "qcow2"), ("fz-raw.img", "raw")):
        if c.get(f"/v1/storage/volumes/{name}").status_code == 404:
            c.post("/v1/storage/volumes", json={"name": name, "size_gib": 1, "format": fmt})
    if c.get("/v1/vms/fz-a").status_code == 404:
        c.post("/v1/vms?wait=true", json={"name": "fz-a", "memory_mib": 64, "disks": [{"size_gib": 1}]})
    if c.get("/v1/vms/fz-b").status_code == 404:
        c.post("/v1/vms?wait=true", json={"name": "fz-b", "memory_mib": 64, "start": False})
    if c.get("/v1/vms/fz-a/snapshots/s1").status_code == 404:
        c.post("/v1/vms/fz-a/snapshots?wait=true", json={"name": "s1"})
    ids = [t["id"] for t in c.get("/v1/tasks").json()[:4]]
    TASK_IDS[1:] = ids + [f"{i:x}" * 32 for i in range(4 - len(ids))]  # always 5: hypothesis needs a fixed shape


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_schema_driven_fuzz_never_gets_a_5xx(live: Live, client: httpx.Client, doc: dict[str, Any],
                                             data: st.DataObject) -> None:
    _ensure_objects(client)
    for _ in range(6):
        method, target, kw, template = data.draw(requests_(doc))
        r = client.request(method, target, **kw)
        event(f"{method} {template} {r.status_code}")
        if template == "/v1/host/api-token/rotate" and r.status_code == 200:
            client.headers["Authorization"] = f"Bearer {r.json()['token']}"  # the old one is refused from now on
        assert r.status_code < 500, (method, target, kw, r.status_code, r.text[:500])
        problems = answer_errors(doc, method, template, r)
        assert not problems, (method, target, r.status_code, problems, r.text[:500])
        if r.status_code >= 400:
            body = r.json()
            assert set(body) == {"error", "field", "hint"}, (method, target, body)
        elif r.headers.get("content-type", "").startswith("application/json"):
            r.json()
