"""A host running qx-update from before delegated targets roles reads only the top-level ``targets``
role's own targets (docs/update-format.md §2.1, "Older qx-update"). That is the documented behaviour,
not a defect: such a host sees only the newest non-yanked release of each channel, installs it, and that
release's qx-update walks the delegations from then on. This proves it over HTTP with ngclient and the
client's own release choice (``qx_update.releases.choose``) given only the top-level role."""

from __future__ import annotations

from pathlib import Path

from tuf.api.metadata import Metadata, Targets
from tuf.ngclient import Updater

from qx_update import releases
from qx_update_server import release
from qx_update_server.repository import Repository

from .test_bounds import fast_release


def test_old_client_gets_the_newest_release_of_each_channel(tmp_path: Path, static_server) -> None:
    repo = Repository(tmp_path / "data")
    repo.init()
    for v, channel in (("1.0.0", "stable"), ("1.1.0", "stable"), ("2.0.0", "beta"), ("2.1.0", "beta"),
                       ("3.0.0", "dev"), ("3.1.0", "dev")):
        repo.publish(release.load([fast_release(tmp_path / "b", v)]), channel="dev")
        if channel != "dev":
            repo.promote(v, to=channel)
    repo.yank("2.1.0")  # the newest beta is yanked: the one before it is the newest beta
    repo.yank("3.1.0")  # and the newest dev
    url = static_server(repo.repo_dir)

    md = tmp_path / "old-host"
    (md / "targets").mkdir(parents=True)
    updater = Updater(metadata_dir=str(md), metadata_base_url=f"{url}/metadata/", target_dir=str(md / "targets"),
                      target_base_url=f"{url}/targets/", bootstrap=repo.root_bytes(1))
    updater.refresh()
    top = Metadata[Targets].from_file(str(md / "targets.json")).signed  # verified by refresh: all it reads
    listed = {tf.unrecognized_fields["custom"]["quantix"]["version"] for tf in top.targets.values()}
    assert listed == {"1.1.0", "2.0.0", "3.0.0"}  # newest per channel; nothing yanked, nothing older

    for channel, newest in (("stable", "1.1.0"), ("beta", "2.0.0"), ("dev", "3.0.0")):
        choice = releases.choose(top.targets, channel=channel, running_version="0.9.0", floor=0,
                                 slot_capacity=1 << 40, host_id="old-host")
        assert choice.release is not None and choice.release.fields.version == newest, (channel, choice)
        # and it can fetch what it chose, verified against the top-level role alone
        path = updater.download_target(choice.release.root, str(md / "targets" / f"{channel}.zst"))
        assert Path(path).stat().st_size == choice.release.root.length
    # a host already on its channel's newest sees nothing newer (it does not see older releases at all)
    assert releases.choose(top.targets, channel="stable", running_version="1.1.0", floor=0, slot_capacity=1 << 40,
                           host_id="old-host").release is None
