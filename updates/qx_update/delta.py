"""The delta paths of ``qx-update apply``: a release's signed chunk indexes, what this host already holds,
and the writers that use them (docs/update-format.md §5; the mechanism is :mod:`qx_update.chunked`).

Call order (:meth:`qx_update.client.Client._apply`): :meth:`Delta.release_index` for the new release's
root and UKI (None: the release has no index, or it cannot be used → the full payload, as before) →
:meth:`Delta.uki` (the UKI file in the download cache, built from chunks, verified against its signed
target) → :meth:`Delta.root_writer` (handed to :func:`qx_update.slotinstall.write_and_switch`, which runs
it after removing the target slot's boot entry: one pass, then the read-back proof).

What the host holds: the running slot and the inactive slot's previous content, each described by the
index *kept* when that slot was written (``<state_dir>/chunk-index/<slot>.root.json``), or else by the
signed index of the release its boot entry names (fetched through TUF, if the repository still signs
it); the running release's UKI on the ESP likewise (``uki-<version>.json``). These indexes only say
where to look: every chunk taken from them is verified against the *new* signed index before use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from qx_common import log
from qx_common.errors import QxError
from qx_common.fs import atomic_write
from qx_common.progress import Observer
from qx_common.version import is_valid_version
from qx_update import bootentry as be
from qx_update import chunked, download
from qx_update.chunkindex import STORE_DIR, ChunkIndex
from qx_update.contract import INDEX_OF, ContractError, target_path
from qx_update.errors import VerificationError

if TYPE_CHECKING:
    from tuf.api.metadata import TargetFile

    from qx_update.repo import Repo

_log = log.get("update.delta")
KEPT_DIR = "chunk-index"


class Delta:
    def __init__(self, rp: Repo, *, state_dir: Path, download_dir: Path, deadline: float,
                 progress: bool | Observer, offline_dir: Path | None = None) -> None:
        self.rp = rp
        self.kept_dir = state_dir / KEPT_DIR
        self.download_dir = download_dir
        self.deadline = deadline
        self.progress = progress
        self.offline_dir = offline_dir
        self.stats: dict[str, chunked.Stats] = {}
        self.index_bytes: dict[str, int] = {}  # artifact -> bytes of its chunk indexes fetched (any version)

    # -- indexes ---------------------------------------------------------------------------------
    def _signed(self, version: str, artifact: str) -> tuple[ChunkIndex, bytes] | None:
        """The signed index of ``version``'s ``artifact`` through TUF, or None when it has none."""
        path = target_path(version, INDEX_OF[artifact])
        info = self.rp.find_targetinfo(path)
        if info is None:
            return None
        tally = download.Tally()
        f = download.fetch(info, self.rp.target_url(info), self.download_dir, label=f"{artifact} index",
                           progress=False, deadline=self.deadline, tally=tally)
        self.index_bytes[artifact] = self.index_bytes.get(artifact, 0) + tally.received
        data = f.read_bytes()
        return ChunkIndex.from_json(data, path), data

    def release_index(self, version: str, artifact: str, *, length: int, sha256: str) -> tuple[ChunkIndex, bytes] | None:
        """The new release's index of ``artifact``, checked to describe its signed image; None → full payload."""
        if self.offline_dir is not None and not (self.offline_dir / "targets" / STORE_DIR).is_dir():
            return None  # an offline copy without the chunk store: the full payload it carries
        try:
            found = self._signed(version, artifact)
        except ContractError as e:
            _log.warning("  %s index of %s is unusable (%s): using the full payload", artifact, version, e.message)
            return None
        if found is None:
            return None
        index, data = found
        try:
            index.check_describes(version=version, artifact=artifact, length=length, sha256=sha256,
                                  where=target_path(version, INDEX_OF[artifact]))
        except ContractError as e:
            raise VerificationError(e.message) from e  # signed, yet about another image: mix-and-match
        return index, data

    def known(self, kept_name: str, version: str | None, artifact: str) -> ChunkIndex | None:
        """What a slot or file of ``version`` holds: the kept index, else the signed one (a hint; None: unknown)."""
        kept = self.kept_dir / kept_name
        try:
            idx = ChunkIndex.from_json(kept.read_bytes(), str(kept))
            if version is None or idx.version == version:
                return idx
        except FileNotFoundError:
            pass
        except (OSError, ContractError) as e:
            _log.warning("  kept chunk index %s unusable (%s)", kept, e)
        if version is None or not is_valid_version(version):
            return None
        try:
            found = self._signed(version, artifact)
        except QxError as e:  # a hint only: any failure means "fetch those chunks"
            _log.info("  no chunk index for %s %s (%s)", artifact, version, e.message)
            return None
        return found[0] if found else None

    def keep(self, kept_name: str, data: bytes) -> None:
        self.kept_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.kept_dir / kept_name, data, mode=0o600)

    # -- writers ---------------------------------------------------------------------------------
    def uki(self, found: tuple[ChunkIndex, bytes], info: TargetFile, *, esp_root: Path, running_version: str,
            other_version: str | None) -> Path:
        """The release's UKI in the download cache, from chunks (the ESP's UKIs as seeds), verified."""
        index, data = found
        sha = info.hashes["sha256"]
        done = self.download_dir / f"{sha}.{Path(info.path).name}"
        if done.exists():
            try:
                with done.open("rb") as f:
                    info.verify_length_and_hashes(f)
                self.stats["uki"] = chunked.Stats(path=chunked.CACHED, reused_bytes=info.length)
                return done
            except Exception:  # noqa: BLE001 - python-tuf's LengthOrHashMismatchError: build it again
                done.unlink()
        seeds = []
        for v in dict.fromkeys([running_version, other_version]):
            p = esp_root / be.uki_path(v) if v else None
            if p is not None and p.is_file() and (idx := self.known(f"uki-{v}.json", v, "uki")) is not None:
                seeds.append(chunked.Seed(p, idx, f"UKI {v}"))
        part = self.download_dir / f"{sha}.chunked"
        journal = self.download_dir / f"{sha}.uki.journal"
        full = chunked.Full(url=self.rp.target_url(info), length=info.length, sha256=sha, compressed=False)
        self.stats["uki"] = chunked.assemble(
            index, part, base_url=self.rp.target_base_url, journal_path=journal, seeds=seeds, label="uki",
            progress=self.progress, deadline=self.deadline, where=target_path(index.version, "uki-index"),
            full=full)
        try:
            with part.open("rb") as f:
                info.verify_length_and_hashes(f)
        except Exception as e:  # noqa: BLE001 - every chunk verified, so only a disk error gets here
            part.unlink(missing_ok=True)
            chunked.done(journal)
            raise VerificationError(f"{info.path}: the UKI built from verified chunks does not match its signed "
                                    f"hash (bad disk?): {e}") from e
        part.rename(done)
        chunked.done(journal)
        self.keep(f"uki-{index.version}.json", data)
        # Only the UKIs the ESP can still hold (the two slots' releases and this one) stay described.
        wanted = {f"uki-{v}.json" for v in (running_version, other_version, index.version) if v}
        for p in self.kept_dir.glob("uki-*.json"):
            if p.name not in wanted:
                p.unlink(missing_ok=True)
        return done

    def root_writer(self, found: tuple[ChunkIndex, bytes], *, slot_path: Path, target: str, running: str,
                    running_path: Path, running_version: str, target_version: str | None):  # type: ignore[no-untyped-def]
        """A callable that writes the slot from chunks and proves it (for ``write_and_switch``)."""
        index, data = found

        def write() -> None:
            seeds = []
            if (idx := self.known(f"{running}.root.json", running_version, "root")) is not None:
                seeds.append(chunked.Seed(running_path, idx, f"slot {running.upper()}"))
            previous = self.known(f"{target}.root.json", target_version, "root")
            journal = self.download_dir / f"{index.sha256}.root.journal"
            self.stats["root"] = chunked.assemble(
                index, slot_path, base_url=self.rp.target_base_url, journal_path=journal, seeds=seeds,
                previous=previous, label="slot", progress=self.progress, deadline=self.deadline,
                where=target_path(index.version, "root-index"), full=self._full_root(index.version),
                read_back=True)
            if self.stats["root"].read_back_sha256 != index.sha256:
                raise VerificationError(f"slot {slot_path} reads back differently from what was written (bad disk?)")
            chunked.done(journal)
            self.keep(f"{target}.root.json", data)

        return write

    def _full_root(self, version: str) -> chunked.Full | None:
        """The release's root payload (zstd), signed: the stream path's source (None: chunks only)."""
        info = self.rp.find_targetinfo(target_path(version, "root"))
        if info is None or "sha256" not in info.hashes:
            return None
        return chunked.Full(url=self.rp.target_url(info), length=info.length, sha256=info.hashes["sha256"],
                            compressed=True)

    def summary(self) -> str:
        """``delta: fetched …, reused …; root by delta, uki by full-stream`` (the apply's message)."""
        if not self.stats:
            return ""
        fetched = sum(s.fetched_bytes for s in self.stats.values())
        reused = sum(s.reused_bytes for s in self.stats.values())
        paths = ", ".join(f"{k} by {s.path}" for k, s in self.stats.items())
        return f"delta: fetched {fetched / 2**20:.1f} MiB, reused {reused / 2**20:.1f} MiB; {paths}"
