"""qx-update's public API: every ``--json`` output is exactly a :mod:`qx_update.api` model.

The real CLI (a subprocess) runs against a real signed repository on 127.0.0.1 and a host made of files;
its output must parse strictly (no field missing, none unknown, the schema version checked) and must equal
what the in-process functions exported by ``qx_update`` return for the same host.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

import qx_update
from qx_update import api
from tests.updates.conftest import Host, payload
from tests.updates.tufrepo import TufRepo

README = (Path(__file__).resolve().parents[2] / "updates" / "README.md").read_text()


def _cli(host: Host, *args: str, check: bool = True) -> str:
    return host.run("--json", *args, check=check).stdout


def test_status_json_is_the_model_and_equals_the_function(host: Host, repo: TufRepo) -> None:
    rel = repo.add_release("1.1.0", slot_bytes=payload(1), channels=["dev", "beta", "stable"])
    cfg = qx_update.load_config(host.config)
    before = api.UpdateStatus.from_json(_cli(host, "status"))
    assert before.state == "not-checked" and before.running_slot == "a" and before.running_version == "1.0.0"
    assert before == qx_update.status(cfg)

    chk = api.CheckResult.from_json(_cli(host, "check"))
    assert chk.available is not None and chk.available.version == "1.1.0" and not chk.installed
    st = api.UpdateStatus.from_json(_cli(host, "status"))
    assert st.state == "update-available" and st.available == "1.1.0" and st.last_check is not None

    lines = _cli(host, "apply").strip().splitlines()
    parsed = [api.read_apply_line(line) for line in lines]
    assert all(isinstance(p, api.ProgressEvent) for p in parsed[:-1]) and len(parsed) > 2
    res = parsed[-1]
    assert isinstance(res, api.ApplyResult) and res.applied is not None and res.applied.version == "1.1.0"
    assert res.slot == "b" and res.next_boot == "b" and "installed 1.1.0 into slot B" in res.message
    # A release without chunk indexes comes as whole payloads: their signed lengths are what was fetched.
    assert {t.image: (t.path, t.fetched_bytes, t.reused_bytes) for t in res.transfer} == {
        "root": ("payload", rel.root_file.stat().st_size, 0), "uki": ("payload", rel.uki_file.stat().st_size, 0)}, \
        res.transfer

    st = api.UpdateStatus.from_json(_cli(host, "status"))
    assert st.state == "reboot-pending" and st.awaiting_reboot == "1.1.0" and st.available is None
    assert st.pending is not None and st.pending.from_version == "1.0.0" and st.slots["b"].tries_left == 3
    assert st == qx_update.status(cfg)
    assert json.loads(_cli(host, "status")) == st.to_dict()   # exactly the model, nothing else

    rb = api.RollbackResult.from_json(_cli(host, "rollback"))
    assert not rb.rolled_back and rb.cancelled == "1.1.0" and rb.next_boot == "a"
    assert api.UpdateStatus.from_json(_cli(host, "status")).awaiting_reboot is None


def test_check_function_and_cli_agree(host: Host, repo: TufRepo) -> None:
    repo.add_release("1.1.0", slot_bytes=payload(2), channels=["dev"])
    cfg = qx_update.load_config(host.config)
    by_cli = api.CheckResult.from_json(_cli(host, "check"))
    by_call = qx_update.check(cfg)
    assert dataclasses.replace(by_call, metadata_refresh_s=0) == dataclasses.replace(by_cli, metadata_refresh_s=0)
    assert by_cli.available is None and by_cli.skipped == [api.SkippedRelease("1.1.0", "not on channel stable")]
    ch = api.ChannelResult.from_json(_cli(host, "channel", "set", "dev"))
    assert ch.channel == "dev" and ch.file and Path(ch.file).exists()


def test_a_failure_prints_an_error_report(host: Host) -> None:
    proc = host.run("--json", "allow", "9.9.9", check=False)
    assert proc.returncode == 2
    err = api.ErrorReport.from_json(proc.stdout)
    assert err.exit_code == 2 and err.error == "9.9.9 is not refused on this host" and err.hint
    assert "error: 9.9.9 is not refused on this host" in proc.stderr


def test_the_reader_is_strict(host: Host) -> None:
    good = json.loads(_cli(host, "status"))
    api.UpdateStatus.from_dict(good)
    with pytest.raises(api.SchemaError, match="schema_version: 2 is not 1"):
        api.UpdateStatus.from_dict(good | {"schema_version": 2})
    with pytest.raises(api.SchemaError, match="unknown field 'colour'"):
        api.UpdateStatus.from_dict(good | {"colour": "red"})
    missing = {k: v for k, v in good.items() if k != "running_slot"}
    with pytest.raises(api.SchemaError, match=r"UpdateStatus\.running_slot: missing"):
        api.UpdateStatus.from_dict(missing)
    with pytest.raises(api.SchemaError, match=r"UpdateStatus\.slots\.a\.blessed: 'yes' is not bool"):
        api.UpdateStatus.from_dict(good | {"slots": {**good["slots"], "a": {**good["slots"]["a"], "blessed": "yes"}}})
    with pytest.raises(api.SchemaError, match="state: 'fine' is not one of"):
        api.UpdateStatus.from_dict(good | {"state": "fine"})


def test_every_status_field_is_documented() -> None:
    """updates/README.md's status table names each field of UpdateStatus (and nothing else)."""
    section = README[README.index("### `qx-update status --json`"):]
    section = section[:section.index("\n#", 1)] if "\n#" in section[1:] else section
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert documented == {f.name for f in dataclasses.fields(api.UpdateStatus)}
    states = re.search(r"`state` \| one of ([^|]*)\|", section)
    assert states and set(re.findall(r"`([\w-]+)`", states.group(1))) == set(api.State.__args__)  # type: ignore[attr-defined]


def test_public_surface_is_declared() -> None:
    for name in qx_update.__all__:
        assert hasattr(qx_update, name), name
    for fn in ("status", "check", "apply", "rollback", "set_channel", "load_config"):
        assert fn in qx_update.__all__


def test_in_process_apply_and_rollback_release_the_lock(host: Host, repo: TufRepo) -> None:
    """The entry points take qx-update's lock for their call only: the CLI can run right after."""
    repo.add_release("1.1.0", slot_bytes=payload(3), channels=["dev", "beta", "stable"])
    cfg = qx_update.load_config(host.config)
    res = qx_update.apply(cfg)
    assert res.applied is not None and res.applied.version == "1.1.0" and res.slot == "b"
    assert api.UpdateStatus.from_json(_cli(host, "status")).awaiting_reboot == "1.1.0"
    rb = qx_update.rollback(cfg)
    assert rb.cancelled == "1.1.0" and rb == api.RollbackResult.from_dict(rb.to_dict())
    again = api.ApplyResult.from_json(_cli(host, "apply").strip().splitlines()[-1])   # the lock is free again
    assert again.applied is not None and again.applied.version == "1.1.0"
    assert qx_update.set_channel(cfg, "beta").channel == "beta"
