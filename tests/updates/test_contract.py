"""The release contract model (qx_update.contract) against its document and its own rules.

docs/update-format.md §2 is the human description of the ``custom.quantix`` fields, the channels, the
target paths and the bounds; this test parses the document and compares it with the model, so neither
can change without the other.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from qx_update import contract
from qx_update.contract import ContractError, ReleaseTarget, Rollout

DOC = (Path(__file__).resolve().parents[2] / "docs" / "update-format.md").read_text()
SAMPLE = ReleaseTarget(version="1.2.0", artifact="root", channels=("dev", "beta"), security_epoch=1,
                       slot_size=4096, slot_sha256="a" * 64, kernel_cmdline="root=PARTLABEL=root-a ro",
                       rollout=Rollout(fraction=0.25, start="2026-11-22T00:00:00Z"), notes="n")


def _custom_block() -> str:
    section = DOC[DOC.index("Every Quantix target carries `custom.quantix`"):]
    m = re.search(r"```json\n(.*?)```", section, re.S)
    assert m, "docs/update-format.md §2: the custom.quantix example block is missing"
    return m.group(1)


def test_the_documented_fields_are_the_models_fields() -> None:
    block = _custom_block()
    rollout = re.search(r'"rollout":\s*\{([^}]*)\}', block)
    assert rollout, "the example has no rollout object"
    doc_rollout = set(re.findall(r'"(\w+)":', rollout.group(1)))
    doc_top = set(re.findall(r'"(\w+)":', block.replace(rollout.group(1), "")))
    custom = SAMPLE.to_custom()
    assert doc_top == set(custom), "docs/update-format.md §2 and ReleaseTarget.to_custom() list different fields"
    assert doc_rollout == set(custom["rollout"])
    # The model's own fields are the documented ones too (nothing written that is not a field).
    assert {f.name for f in dataclasses.fields(ReleaseTarget)} == set(custom)
    assert {f.name for f in dataclasses.fields(Rollout)} == doc_rollout
    kinds = re.search(r'"artifact":\s*([^,]*),', block)
    assert kinds and set(re.findall(r'"(\w+)"', kinds.group(1))) == set(contract.ARTIFACTS)


def test_the_documented_channels_paths_and_bounds_are_the_models() -> None:
    m = re.search(r"Channels are ((?:`\w+`(?:, )?)+), ordered", DOC)
    assert m and tuple(re.findall(r"`(\w+)`", m.group(1))) == contract.CHANNELS
    for kind in contract.ARTIFACTS:
        assert f"* `{contract.target_path('<v>', kind)}`" in DOC, kind
    bounds = DOC[DOC.index("**Fields, checked before anything is signed**"):DOC.index("**What a host fetches")]
    bounds = " ".join(bounds.split())
    assert f"at most {contract.MAX_VERSION_LEN} characters" in bounds
    assert f"`notes` at most {contract.MAX_NOTES_BYTES} UTF-8 bytes" in bounds
    assert f"at most {contract.MAX_CMDLINE_BYTES} bytes" in bounds
    assert f"`security_epoch` 0…{contract.MAX_SECURITY_EPOCH:,}" in bounds
    assert contract.MAX_SLOT_SIZE == 1 << 40 and "1 byte…1 TiB" in bounds
    assert f"image_id` (`{contract.IMAGE_ID}`)" in DOC


def test_round_trip_and_canonical_encoding() -> None:
    custom = SAMPLE.to_custom()
    assert custom["rollout"] == {"fraction": "0.25", "start": "2026-11-22T00:00:00Z", "paused": False}
    assert ReleaseTarget.from_custom(custom) == SAMPLE
    whole = dataclasses.replace(SAMPLE, rollout=Rollout(fraction=1.0, start="2026-11-22T00:00:00Z"))
    assert whole.to_custom()["rollout"]["fraction"] == 1          # canonical JSON has no floats
    # Optional on read (other envelopes, older servers): no rollout, notes or yanked.
    bare = {k: v for k, v in custom.items() if k not in ("rollout", "notes", "yanked")}
    assert ReleaseTarget.from_custom(bare).rollout == Rollout() and not ReleaseTarget.from_custom(bare).yanked


@pytest.mark.parametrize(("change", "field"), [
    ({"version": "1.2"}, "version"),
    ({"version": "1.2.0\n"}, "version"),
    ({"artifact": "iso"}, "artifact"),
    ({"channels": "stable"}, "channels"),
    ({"security_epoch": -1}, "security_epoch"),
    ({"security_epoch": True}, "security_epoch"),
    ({"slot_size": 0}, "slot_size"),
    ({"slot_size": (1 << 40) + 1}, "slot_size"),
    ({"slot_sha256": "A" * 64}, "slot_sha256"),
    ({"kernel_cmdline": "ro\ninit=/bin/sh"}, "kernel_cmdline"),
    ({"notes": "x" * 4097}, "notes"),
    ({"notes": "bell\x07"}, "notes"),
    ({"yanked": "no"}, "yanked"),
    ({"rollout": {"fraction": "1.5"}}, "rollout.fraction"),
    ({"rollout": {"fraction": 0.5, "start": "2026-13-01T00:00:00Z"}}, "rollout.start"),
    ({"rollout": {"fraction": 1, "paused": "yes"}}, "rollout.paused"),
    ({"rollout": [1]}, "rollout"),
])
def test_bad_fields_are_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ContractError) as e:
        ReleaseTarget.from_custom(SAMPLE.to_custom() | change)
    assert e.value.message.startswith(f"{field}:"), e.value.message


def test_a_missing_field_is_named() -> None:
    custom = SAMPLE.to_custom()
    del custom["slot_sha256"]
    with pytest.raises(ContractError, match="^slot_sha256: missing"):
        ReleaseTarget.from_custom(custom)


def test_unknown_channels_are_read_but_never_written() -> None:
    """A newer server's extra channel must not make an older host refuse every release."""
    rel = ReleaseTarget.from_custom(SAMPLE.to_custom() | {"channels": ["dev", "lts"]})
    assert rel.channels == ("dev", "lts")
    with pytest.raises(ContractError, match="^channels: unknown channel 'lts'"):
        rel.to_custom()


def test_channels_are_ordered() -> None:
    assert contract.channels_up_to("beta") == ["dev", "beta"]
    assert contract.merge_channels(["dev"], "stable") == list(contract.CHANNELS)
    with pytest.raises(ContractError, match="^channel: unknown channel"):
        contract.channels_up_to("nightly")
