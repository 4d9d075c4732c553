"""The update trust anchor a build ships (qx_build.trust): real TUF root metadata, signed or not."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root, Targets

from qx_build import trust
from qx_common.errors import UserError


def _root(tmp_path: Path, *, sign: bool = True, name: str = "root.json") -> Path:
    signer = CryptoSigner.generate_ed25519()
    root = Root(expires=datetime.now(timezone.utc) + timedelta(days=365))
    root.add_key(signer.public_key, Root.type)
    md = Metadata(root)
    if sign:
        md.sign(signer)
    path = tmp_path / name
    md.to_file(str(path))
    return path


def test_a_self_signed_root_is_staged_whole(tmp_path: Path) -> None:
    root = _root(tmp_path)
    staged = tmp_path / "trust"
    trust.stage(root, staged)
    assert [p.name for p in staged.iterdir()] == [trust.STAGED_NAME]
    assert (staged / trust.STAGED_NAME).read_bytes() == root.read_bytes()


def test_no_root_leaves_an_empty_staging_dir_even_after_a_build_with_one(tmp_path: Path) -> None:
    staged = tmp_path / "trust"
    trust.stage(_root(tmp_path), staged)
    trust.stage(None, staged)
    assert staged.is_dir() and list(staged.iterdir()) == []


@pytest.mark.parametrize("case", ["missing", "not-json", "targets", "unsigned"])
def test_bad_roots_are_refused_naming_tuf_root_and_nothing_is_staged(tmp_path: Path, case: str) -> None:
    staged = tmp_path / "trust"
    trust.stage(_root(tmp_path), staged)  # an earlier good build
    before = (staged / trust.STAGED_NAME).read_bytes()
    bad = tmp_path / f"{case}.json"
    if case == "not-json":
        bad.write_text("{ not json")
    elif case == "targets":
        Metadata(Targets(expires=datetime.now(timezone.utc) + timedelta(days=1))).to_file(str(bad))
    elif case == "unsigned":
        bad = _root(tmp_path, sign=False, name="unsigned.json")
    with pytest.raises(UserError) as e:
        trust.stage(bad, staged)
    assert e.value.message.startswith("TUF_ROOT:")
    assert e.value.hint
    # Validation happens before the staging directory is touched.
    assert (staged / trust.STAGED_NAME).read_bytes() == before
