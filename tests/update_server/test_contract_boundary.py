"""The release contract at the server → client boundary: what the server signs, the client reads back.

The server's real :class:`Repository` publishes, promotes, rolls out and yanks releases; python-tuf's
ngclient refreshes the repository over HTTP on 127.0.0.1 (as a host does); every ``custom.quantix``
it verified must parse with the client's :meth:`qx_update.contract.ReleaseTarget.from_custom` and
serialise back to the same object, and the client's release choice must see what the server meant.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from tuf.api.metadata import TargetFile

from qx_update import contract as client_contract
from qx_update import releases
from qx_update_server import contract as server_contract
from qx_update_server import release
from qx_update_server.repository import Repository

from .conftest import verify_repo


def test_every_signed_custom_round_trips_through_the_client_parser(
        tmp_path: Path, make_release: Callable[..., Path], static_server: Callable[[Path], str]) -> None:
    repo = Repository(tmp_path / "data")
    repo.init()
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)  # metadata expiry counts from now
    for v, epoch in (("1.0.0", 0), ("1.1.0", 2), ("1.2.0", 2)):
        repo.publish(release.load([make_release(v, epoch=epoch)]), channel="dev", notes=f"notes of {v}\n\tdetail",
                     now=now)
    repo.promote("1.1.0", to="stable", now=now)
    repo.rollout("1.1.0", percent=25, now=now)
    repo.rollout("1.2.0", paused=True, now=now)
    repo.yank("1.0.0", now=now)

    url = static_server(tmp_path / "data" / "repository")
    signed = verify_repo(url, repo.root_bytes(1), tmp_path)
    assert len(signed) == 6
    parsed = {}
    for path, q in signed.items():
        model = client_contract.ReleaseTarget.from_custom(q)
        assert model.to_custom() == q, path          # nothing lost or added in either direction
        assert model.path == path                    # the target path is the contract's
        parsed[(model.version, model.artifact)] = model

    r11 = parsed[("1.1.0", "root")]
    assert r11.channels == ("dev", "beta", "stable") and r11.rollout.fraction == 0.25
    assert r11.security_epoch == 2 and r11.rollout.start == now.strftime("%Y-%m-%dT%H:%M:%SZ") and not r11.rollout.paused
    assert parsed[("1.2.0", "uki")].rollout.paused and parsed[("1.0.0", "root")].yanked
    assert parsed[("1.0.0", "root")].channels == ()
    assert parsed[("1.1.0", "uki")].notes == "notes of 1.1.0\n\tdetail"

    # The client's choice reads the same targets: on stable only 1.1.0 is offered, a quarter of hosts.
    targets = {p: TargetFile.from_dict({"length": 1, "hashes": {"sha256": "0" * 64}, "custom": {"quantix": q}}, p)
               for p, q in signed.items()}
    later = now + dt.timedelta(days=1)
    hosts = [f"host-{i}" for i in range(400)]
    chosen = [releases.choose(targets, channel="stable", running_version="0.9.0", floor=0, slot_capacity=1 << 30,
                              host_id=h, now=later).release for h in hosts]
    share = sum(1 for c in chosen if c is not None) / len(hosts)
    assert {c.version for c in chosen if c is not None} == {"1.1.0"} and 0.15 < share < 0.35
    dev = releases.choose(targets, channel="dev", running_version="0.9.0", floor=0, slot_capacity=1 << 30,
                          host_id="host-1", now=later)
    why = {s["version"]: s["reason"] for s in dev.skipped}
    assert why["1.0.0"] == "yanked" and why["1.2.0"] == "rollout paused"


def test_the_server_uses_the_clients_contract_not_a_copy() -> None:
    """One definition: the server's names are the client's objects (not equal copies)."""
    for name in ("CHANNELS", "ARTIFACTS", "IMAGE_ID", "MAX_NOTES_BYTES", "check_version", "encode_fraction",
                 "target_path", "merge_channels"):
        assert getattr(server_contract, name) is getattr(client_contract, name), name
