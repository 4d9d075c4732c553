"""The answer file: golden files (file -> parsed Answer, bad file -> the exact list of errors), the rules
that goldens do not show well, and a fuzz test that parse never raises anything but our errors.

Golden pairs live in ``answers/good`` and ``answers/bad``: ``NAME.toml`` beside ``NAME.json``. A good
file's JSON is the parsed :class:`Answer` (host via ``hostconfig.to_dict``); a bad file's JSON is the list
of ``{field, message, hint}`` in the order :func:`answer.parse` reports them.
"""

from __future__ import annotations

import dataclasses
import json
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qx_common.errors import UserError
from qx_console import hostconfig
from qx_console.hostconfig import ValidationError
from qx_install import answer

ANSWERS = Path(__file__).parent / "answers"
GOOD = sorted((ANSWERS / "good").glob("*.toml"))
BAD = sorted((ANSWERS / "bad").glob("*.toml"))
HASH6 = ("$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/"
         "cZ/1GM/O6IND4WQhG.")
MINIMAL = f"[install]\nmode = \"wipe\"\nroot_password_hash = '{HASH6}'\n[install.disk]\nmodel = \"QEMU*\"\n"


def as_json(a: answer.Answer) -> dict[str, Any]:
    return {"host": hostconfig.to_dict(a.host), "install": dataclasses.asdict(a.install),
            "host_fields": list(a.host_fields)}


def errors_of(data: str | bytes, source: str = "answer file") -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as exc:
        answer.parse(data, source=source)
    return [{"field": e.field, "message": e.message, "hint": e.hint} for e in exc.value.errors]


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_golden(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text())
    assert as_json(answer.load(path)) == expected


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_golden(path: Path) -> None:
    expected = json.loads(path.with_suffix(".json").read_text())["errors"]
    assert errors_of(path.read_bytes(), source=path.name) == expected


def test_golden_sets_are_paired() -> None:
    assert len(GOOD) >= 5 and len(BAD) >= 15
    for p in GOOD + BAD:
        assert p.with_suffix(".json").is_file(), f"{p.name} has no expected .json"
    assert not {p.stem for p in GOOD} & {p.stem for p in BAD}


def test_load_uses_the_path_as_source_and_reports_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "answer.toml"
    bad.write_text("[install\n")
    with pytest.raises(ValidationError) as exc:
        answer.load(bad)
    assert exc.value.errors[0].field == str(bad)
    assert "line 1, column 9" in exc.value.errors[0].message
    with pytest.raises(UserError, match="does not exist"):
        answer.load(tmp_path / "missing.toml")
    with pytest.raises(UserError, match="is a directory"):
        answer.load(tmp_path)


def test_str_and_bytes_parse_alike() -> None:
    assert answer.parse(MINIMAL) == answer.parse(MINIMAL.encode())


def test_every_error_is_a_user_error_with_a_hint() -> None:
    """What the CLI prints: ValidationError is a UserError (exit 2) whose hint is the first error's."""
    with pytest.raises(UserError) as exc:
        answer.parse("[install]\n")
    assert exc.value.exit_code == 2
    assert isinstance(exc.value, ValidationError)
    assert all(e.hint for e in exc.value.errors)
    assert exc.value.hint == exc.value.errors[0].hint


# ---------------------------------------------------------------------------------------------
# Rules beyond the goldens.


def test_clear_text_password_is_never_echoed() -> None:
    secret = "Tr0ub4dor&3-horse"
    for value in (secret, "$6$" + secret, "$1$" + secret, "$2b$" + secret, "$y$" + secret):
        text = MINIMAL.replace(HASH6, value)
        with pytest.raises(ValidationError) as exc:
            answer.parse(text)
        shown = " ".join(f"{e.field} {e.message} {e.hint}" for e in exc.value.errors) + str(exc.value)
        assert secret not in shown
        assert "openssl passwd -6" in shown, shown
    # A password typed under a wrong key is not echoed either.
    wrong_key = MINIMAL.replace("root_password_hash", "root_password").replace(HASH6, secret)
    shown = json.dumps(errors_of(wrong_key))
    assert secret not in shown and "install.root_password" in shown


@pytest.mark.parametrize("value", [
    HASH6,
    "$6$rounds=10000$salt$DlXBMYczdEhPh3u0gYF7SQ1Z/8gtrTdVEm7qFtvDoi4s6ExnEmQmD/hTCtHevju1kEUb8.Di7wexk68ol3ztm.",
    "$5$rounds=10000$salt$UlJsJNOWVbppThrbUjbn3GdUJTATt7hE8wlKsmy.wv1",
    "$y$j9T$ct4vZGBTqJb9VK.qLdfDV.$wvLTgbSR5ArVet1eKTu7qYtoVW/m0FoZ/dlDPMSTr.D",
])
def test_hash_formats_accepted(value: str) -> None:
    assert answer.check_password_hash(value) is None


def test_every_accepted_hash_is_one_the_installer_can_store() -> None:
    """shadow.set_password_hash (what the engine writes with) has its own, looser check: nothing this
    file accepts may be refused there, halfway through an install."""
    from qx_console import shadow

    for value in [HASH6, "$5$rounds=10000$salt$UlJsJNOWVbppThrbUjbn3GdUJTATt7hE8wlKsmy.wv1",
                  "$y$j9T$ct4vZGBTqJb9VK.qLdfDV.$wvLTgbSR5ArVet1eKTu7qYtoVW/m0FoZ/dlDPMSTr.D"]:
        assert answer.check_password_hash(value) is None and shadow.is_password_hash(value)


def test_hashes_made_by_openssl_and_libcrypt_are_accepted() -> None:
    """The hint's own recipe must produce something the check accepts (and the console's yescrypt)."""
    from qx_common.run import run
    from qx_console import shadow

    for flag in ("-6", "-5"):
        made = run(["openssl", "passwd", flag, "-stdin"], input="a password\n").stdout.strip()
        assert answer.check_password_hash(made) is None, made
    assert answer.check_password_hash(shadow.hash_password("a password")) is None


@pytest.mark.parametrize("text,expected", [
    ("20GB", 20 * 10**9), ("20 GB", 20 * 10**9), ("1.5TiB", 3 * 2**39), ("512MiB", 512 * 2**20),
    ("1kB", 1000), ("1KiB", 1024), ("7b", 7), ("0.5KB", 500), (4096, 4096), ("1.000000001GB", 1000000001),
])
def test_sizes(text: int | str, expected: int) -> None:
    assert answer.parse_size(text) == expected


@pytest.mark.parametrize("text,message", [
    ("20G", "ambiguous unit 'G'"), ("20", "has no unit"), ("GB", "is not a size"), ("-1GB", "is not a size"),
    ("1e3GB", "is not a size"), ("20 bytes", "unknown unit"), (0, "at least 1 byte"), ("0.1B", "at least 1 byte"),
    (True, "wrong type"),
])
def test_bad_sizes(text: Any, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        answer.parse_size(text, "install.disk.min_size")
    assert exc.value.errors[0].field == "install.disk.min_size"
    assert message in exc.value.errors[0].message


def test_format_size() -> None:
    assert [answer.format_size(n) for n in (0, 999, 1000, 4 * 10**9, 6_100_000_000, 2**40, 10**21)] == \
        ["0 B", "999 B", "1.0 kB", "4.0 GB", "6.1 GB", "1.1 TB", "1000.0 EB"]
    assert answer.format_size(999_960) == "1.0 MB"  # no "1000.0 kB"


def test_writes_config_and_provenance() -> None:
    a = answer.parse('hostname = "h1"\n[network]\nnic = "eth0"\n[network.ipv6]\nmode = "off"\n' + MINIMAL)
    assert a.install.writes_config
    assert a.host_fields == ("hostname", "network.ipv6", "network.nic")
    assert a.provenance() == {"hostname": "answer-file", "network.ipv6": "answer-file", "network.nic": "answer-file"}
    assert set(a.host_fields) <= set(hostconfig.NETWORK_FIELDS) | {"hostname"}
    up = answer.parse('[install]\nmode = "upgrade"\n[install.disk]\nmodel = "x"\n')
    assert not up.install.writes_config and up.install.root_password_hash == "" and up.host == hostconfig.HostConfig()


def test_all_errors_of_install_and_host_come_together() -> None:
    text = ('hostname = "bad_name"\n[install]\nmode = "wipe"\nafter = "halt"\n'
            '[install.disk]\nmin_size = "1XB"\n')
    assert [e["field"] for e in errors_of(text)] == [
        "hostname", "install.root_password_hash", "install.after", "install.disk.min_size"]


def test_too_large_input() -> None:
    big = MINIMAL + "#" * answer.MAX_BYTES
    errs = errors_of(big.encode())
    assert errs[0]["field"] == "answer file" and "larger than 1024 KiB" in errs[0]["message"]
    # Exactly the limit is fine (comments are valid TOML).
    exact = MINIMAL + "#" * (answer.MAX_BYTES - len(MINIMAL) - 1) + "\n"
    assert len(exact.encode()) == answer.MAX_BYTES
    assert answer.parse(exact).install.mode == "wipe"


@pytest.mark.parametrize("text", [
    "a = " + "[" * 50000 + "]" * 50000,             # tomllib recursion
    "a = " + "{b = " * 5000 + "1" + "}" * 5000,     # inline tables
    "[install.disk.a.b.c.d.e.f.g.h]\n",
])
def test_deep_nesting_is_refused(text: str) -> None:
    errs = errors_of(text)
    assert len(errs) == 1 and "nested too deeply" in errs[0]["message"]


def test_long_dotted_keys_are_refused_before_tomllib() -> None:
    """tomllib's cost grows with the square of a dotted key's parts (a 200 KiB line took 24 GB), so
    such a line never reaches it. Kept small here so that a broken guard cannot exhaust memory."""
    for text in ("x." * 2000 + "y = 1\n", "[" + "t." * 40 + "u]\n", "a = {" + "b." * 40 + "c = 1}\n"):
        errs = errors_of(text)
        assert len(errs) == 1 and "more than 16 '.' outside quotes" in errs[0]["message"], errs


def test_dots_in_strings_and_comments_are_not_keys() -> None:
    dotted = "a." * 100 + "b"
    text = (f'# {"." * 200}\nsearch = """\n{"." * 50}\n"""\nnote = \'{"." * 50}\'\n'
            f'quoted = "\\"{"." * 50}"\n')
    errs = errors_of(text)   # parsed (unknown keys reported), so none of those dots counted
    assert [e["field"] for e in errs] == ["search", "note", "quoted", "install"], errs
    parsed = answer.parse(MINIMAL.replace('model = "QEMU*"', f'model = "{dotted}"  # {"." * 40}'))
    assert parsed.install.disk.model == dotted


def test_huge_numbers_are_refused() -> None:
    errs = errors_of("a = " + "1" * 5000)
    assert len(errs) == 1 and "is not valid TOML" in errs[0]["message"]
    # Hex escapes Python's digit limit; a number that large cannot even be put into an error message.
    for key in ("network.ipv4.prefix", "network.vlan", "ssh.timeout_min", "install.disk.max_size"):
        table, _, leaf = key.rpartition(".")
        errs = errors_of(f"[{table}]\n{leaf} = 0x{'f' * 5000}\n")
        assert errs == [{"field": key, "message": "is a number too large for TOML (64-bit integers)",
                         "hint": "TOML integers are at most 9223372036854775807; use a value this setting can have"}]


def test_lone_surrogate_in_str() -> None:
    errs = errors_of("hostname = '\ud800'\n")
    assert "not valid text" in errs[0]["message"]


def test_long_values_are_clipped_in_messages() -> None:
    errs = errors_of('[install]\nmode = "' + "w" * 5000 + '"\n[install.disk]\nmodel = "x"\n')
    assert len(errs[0]["message"]) < 80


# ---------------------------------------------------------------------------------------------
# Fuzzing: whatever the input, parse returns an Answer or raises a UserError (ValidationError).

_KEYS = ["install", "disk", "mode", "keep_config", "root_password_hash", "keyboard", "after", "by_id", "model",
         "serial", "min_size", "max_size", "transport", "hostname", "network", "nic", "vlan", "ipv4", "ipv6",
         "dns", "search_domain", "address", "prefix", "gateway", "ssh", "enabled", "timeout_min",
         "update_channel", "lockdown", "x", "a b", "é"]
_STRINGS = ["wipe", "keep-data", "upgrade", "reboot", "poweroff", "none", "us", "de", "static", "dhcp", "auto",
            "off", "eth0", "192.0.2.10", "192.0.2.1", "2001:db8::1", "fe80::1%eth0", "20GB", "1.5TiB", "20G",
            "nvme", "usb", HASH6, "$y$j9T$$", "h1", "", "*", "/dev/disk/by-id/x", "0.0.0.0", "::"]

_scalars = st.one_of(
    st.sampled_from(_STRINGS), st.text(max_size=20), st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([0, 1, 24, 64, 4094, 4095, 2**63 - 1]),
    st.floats(allow_nan=True), st.datetimes().map(lambda d: d.replace(microsecond=0)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=5)),
    max_leaves=25,
)
_documents = st.dictionaries(st.sampled_from(_KEYS), _values, max_size=8)


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(v), repr(v))
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    return v.isoformat()  # datetime


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{_toml_string(k)} = {_toml_value(v)}\n" for k, v in doc.items())


def _parse_or_user_error(data: str | bytes) -> None:
    try:
        answer.parse(data)
    except UserError:
        pass


_FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                 derandomize=True)


@_FUZZ
@given(_documents)
def test_fuzz_structured(doc: dict[str, Any]) -> None:
    _parse_or_user_error(to_toml(doc))


@_FUZZ
@given(st.fixed_dictionaries({"install": st.fixed_dictionaries(
    {"mode": st.sampled_from(answer.MODES), "disk": st.dictionaries(st.sampled_from(_KEYS), _scalars, max_size=3)},
    optional={"root_password_hash": st.sampled_from(_STRINGS), "keep_config": _scalars}),
    "network": st.dictionaries(st.sampled_from(_KEYS), _values, max_size=6)},
    optional={"hostname": _scalars, "ssh": st.dictionaries(st.sampled_from(_KEYS), _scalars, max_size=3)}))
def test_fuzz_near_valid(doc: dict[str, Any]) -> None:
    """Documents that get past the structure checks, so hostconfig's and our value rules run."""
    _parse_or_user_error(to_toml(doc))


@_FUZZ
@given(st.one_of(st.binary(max_size=300), st.text(alphabet=string.printable + "[]{}=\"'.$é\x00", max_size=300)))
def test_fuzz_raw(data: str | bytes) -> None:
    _parse_or_user_error(data)
