"""The update workflows behind the CLI: status, check, apply, rollback, gate, blessed.

apply, in this order (each step leaves the running slot the default and untouched until the switch):

1. refresh TUF metadata (:mod:`repo`), choose a release (:mod:`releases`);
2. download the UKI and the root payload, resumable, verified by TUF (:mod:`download`) — or, when the
   release has signed chunk indexes, only the chunks this host lacks (:mod:`delta`, :mod:`chunked`); a
   host that booted with Secure Boot on refuses a UKI that does not verify against its certificate
   (:mod:`secureboot`) before the root payload is fetched and before anything is written;
3. remove the inactive slot's boot entry, write the slot (in one pass from chunks, for a delta) and read
   it back (:mod:`slots`); for a dm-verity release (its UKI's own command line has ``roothash=``) seal
   it: the hash tree on the slot's verity partition, the partition UUIDs its root hash names
   (:mod:`seal`) — a host without verity partitions refuses such a release before the root payload is
   fetched;
4. record ``pending`` in the state (:mod:`state`) — before the switch, so a power cut cannot lose it;
5. copy the UKI and write ``quantix-<slot>+3.conf`` (:mod:`esp`) — the switch.
Steps 3–5 are :func:`qx_update.slotinstall.write_and_switch`, shared with the installer's upgrade.
Every workflow returns one of :mod:`qx_update.api`'s typed results (what ``--json`` prints).
A release whose trial boot failed its health gate is refused on this host from then on
(``state.refused``) until ``qx-update allow VERSION``; a newer release is offered as usual.

After the reboot, ``qx-update gate`` (before ``boot-complete.target``) decides whether systemd blesses
the boot; ``qx-update blessed`` (after ``systemd-bless-boot.service``) then raises the security-epoch
floor, or records an automatic rollback with the gate's reason when the new slot's tries ran out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from qx_common import log
from qx_common import run as r
from qx_common.errors import EnvironmentError_, QxError, UserError
from qx_common.progress import Observer
from qx_common.slot import verity_label
from qx_update import config as cfgmod
from qx_update import api, contract, crashpoint, esp, slotinstall, slots, state
from qx_update.errors import VerificationError

# download/repo/releases (tuf, urllib3: ~0.15 s of imports) and health are imported where they are
# used, so the boot-time commands (status, gate, blessed) start without them.
if TYPE_CHECKING:
    from qx_update import delta, download, releases, repo

_log = log.get("update")


class Client:
    def __init__(self, cfg: cfgmod.Config, *, progress: bool | Observer = True) -> None:
        """``progress``: draw bars (True), nothing (False), or call an observer (label, done, total)."""
        self.cfg = cfg
        self.progress = progress
        self.st = state.load(cfg.state_file)

    # -- helpers -----------------------------------------------------------------------------
    def lock(self) -> None:
        """One writer at a time (the timer and an operator): an flock held until the process exits."""
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.cfg.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EnvironmentError_("another qx-update is changing this host right now",
                                    hint="wait for it to finish (systemctl status qx-update.service)") from None
        self._lock_fd: int | None = fd
        self.st = state.load(self.cfg.state_file)  # re-read under the lock

    def unlock(self) -> None:
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[Client]:
        """The lock for an in-process caller (:mod:`qx_update.api`), released when the block ends."""
        self.lock()
        try:
            yield self
        finally:
            self.unlock()

    def save(self) -> None:
        state.save(self.cfg.state_file, self.st)

    def esp(self) -> esp.Esp:
        return esp.Esp(esp.find_esp(self.cfg.esp))

    def running(self) -> str:
        return slots.running_slot(self.cfg.running_slot)

    def running_version(self, e: esp.Esp, running: str) -> str:
        entry = e.slots().get(running)
        if entry is not None and entry.version != "?":
            return entry.version
        from qx_common.version import product_version

        return product_version()

    def _open(self, from_dir: Path | None) -> repo.Repo:
        if from_dir is not None:
            base = "file://" + str(from_dir.resolve())
        elif self.cfg.server_url:
            base = self.cfg.server_url
        else:
            raise UserError("no update server is configured (server_url)",
                            hint="qx-update --config FILE with server_url = ..., or apply --from <offline copy>")
        from qx_update import repo

        return repo.open_repo(trusted_root=self.cfg.trusted_root, metadata_dir=self.cfg.metadata_dir, base_url=base,
                              download_deadline=self.cfg.download_deadline)

    def _choose(self, rp: repo.Repo, e: esp.Esp, running: str, *, refresh: bool = True) -> tuple[releases.Choice, float]:
        seconds = rp.refresh() if refresh else 0.0
        hid = state.host_id(self.st, self.cfg.host_id_file)
        from qx_update import releases

        capacity = slots.size_of(self.cfg.slots[slots.other(running)])
        running_version = self.running_version(e, running)
        # Only releases newer than the running one can be chosen: their delegated roles are all a check reads.
        targets = rp.targets(newer_than=running_version)
        choice = releases.choose(targets, channel=self.cfg.channel,
                                 running_version=running_version,
                                 floor=self.st.security_epoch_floor, slot_capacity=capacity, host_id=hid,
                                 refused={v: _refused(r).sentence() for v, r in self.st.refused.items()
                                          if self._still_refused(v, r, rp)})
        return choice, seconds

    def _still_refused(self, version: str, record: dict[str, Any], rp: repo.Repo) -> bool:
        """A Secure Boot refusal holds for the UKI it was about and the certificate it was checked against:
        a release published again with another UKI, or a host that now trusts another certificate (an
        upgrade that ships it), is checked again. A rollback holds until 'allow'."""
        if record.get("cause") != "secure-boot":
            return True
        try:
            info = rp.find_targetinfo(contract.target_path(version, "uki"))
        except QxError:
            return True  # cannot tell: keep the refusal (a check must not install what was refused)
        uki = info.hashes.get("sha256") if info is not None else None
        return uki == record.get("uki_sha256") and _file_sha256(self.cfg.secure_boot_cert) == record.get("cert_sha256")

    def checkin(self, event: str) -> api.CheckinResult | None:
        """Report this host to the update server's fleet view (best effort; see :mod:`qx_update.checkin`).

        Returns what happened, or None when no check-in token is configured."""
        from qx_update import checkin

        token = checkin.read_token(self.cfg.checkin_token_file)
        if token is None:
            return None
        running = self.running()
        try:
            e = self.esp()
            version = self.running_version(e, running)
        except QxError:
            from qx_common.version import product_version

            version = product_version()
        body = {"host_id": state.host_id(self.st, self.cfg.host_id_file), "version": version, "slot": running,
                "channel": self.cfg.channel,
                "health": checkin.health_of(self.st.gate.get(running), self.st.rollback),
                "last_error": (self.st.last_error or {}).get("message")}
        try:
            key: str | None = checkin.host_key(self.cfg.state_dir)
        except OSError as e:  # best effort: report without the key (the server may flag the host)
            _log.warning("cannot keep the host's check-in key: %s", e)
            key = None
        ok, detail = checkin.send(self.cfg.server_url, token, body, key=key)
        if not ok:
            _log.warning("fleet check-in failed (%s); updates are not affected", detail)
        self.st.last_checkin = {"at": state.now_iso(), "event": event, "ok": ok, "detail": detail}
        self.save()
        return api.CheckinResult(schema_version=api.SCHEMA_VERSION, **self.st.last_checkin)

    def _record_error(self, err: QxError) -> None:
        self.st.error(err.message)
        self.st.event("error", message=err.message)
        self.save()

    # -- status ------------------------------------------------------------------------------
    def status(self) -> api.UpdateStatus:
        running = self.running()
        try:
            e = self.esp()
            entries = e.slots()
            default = e.default_slot()
            running_version = self.running_version(e, running)
            esp_error = None
        except QxError as err:
            from qx_common.version import product_version

            entries, default, running_version, esp_error = {}, None, product_version(), err.message
        slot_status = {}
        for s in ("a", "b"):
            ent = entries.get(s)
            slot_status[s] = api.SlotStatus(
                device=str(self.cfg.slots[s]), version=ent.version if ent else None,
                active=s == running, next_boot=s == default,
                blessed=bool(ent and ent.name.blessed), bad=bool(ent and ent.name.bad),
                tries_left=ent.name.tries_left if ent else None, tries_done=ent.name.tries_done if ent else None,
                entry=ent.name.filename if ent else None,
                security_epoch=self.st.slots.get(s, {}).get("security_epoch"))
        pending = slotinstall.pending_effective(self.st, entries)
        rb = self._detect_rollback(entries, running) or self.st.rollback
        st = self.st
        fields: dict[str, Any] = {
            "schema_version": api.SCHEMA_VERSION, "channel": self.cfg.channel, "server_url": self.cfg.server_url,
            "running_slot": running, "running_version": running_version, "default_slot": default,
            "security_epoch_floor": st.security_epoch_floor, "maintenance_window": self.cfg.maintenance_window,
            "trusted_root": self.cfg.trusted_root.exists(), "esp_error": esp_error,
            "last_check": _model(api.LastCheck, st.last_check), "last_error": _model(api.ErrorRecord, st.last_error),
            "last_checkin": _model(api.CheckinRecord, st.last_checkin),
            "pending": _model(api.PendingUpdate, pending), "rollback": _model(api.RollbackRecord, rb),
            "refused": {v: _refused(r) for v, r in st.refused.items()},
            "slots": slot_status,
            "secure_boot": self._secure_boot_status(),
        }
        state_, message = self._verdict(fields)
        return api.UpdateStatus(state=state_, message=message, **fields)

    def _secure_boot_status(self) -> api.SecureBootStatus:
        from qx_update import secureboot

        sb, checks, note = secureboot.status(self.cfg.efivars_dir, self.cfg.secure_boot_cert)
        return api.SecureBootStatus(state=sb, checks_releases=checks, certificate_file=str(self.cfg.secure_boot_cert),
                                    certificate_present=self.cfg.secure_boot_cert.is_file(), note=note)

    def _detect_rollback(self, entries: dict[str, esp.SlotEntry], running: str) -> dict[str, Any] | None:
        p = slotinstall.pending_effective(self.st, entries)
        if not p or p["slot"] == running:
            return None
        ent = entries.get(p["slot"])
        if ent is None or not ent.name.bad:
            return None
        gate = self.st.gate.get(p["slot"], {})
        reason = gate.get("reason") if gate and not gate.get("ok") and gate.get("version") == p["version"] else None
        return {"from_version": p["version"], "from_slot": p["slot"], "to_slot": running,
                "reason": reason or f"its {ent.name.tries_done or self.cfg.tries} boot attempts did not reach "
                                    "boot-complete.target (no health-gate verdict was recorded: it failed "
                                    "before the gate ran)",
                "detected_at": state.now_iso()}

    def _verdict(self, out: dict[str, Any]) -> tuple[api.State, str]:
        """(state, why) for status: the first that applies, in the order of :data:`qx_update.api.State`."""
        if not out["trusted_root"]:
            return "no-trusted-root", (f"no trusted root: this image was built without an update key "
                                       f"({self.cfg.trusted_root})")
        rb: api.RollbackRecord | None = out["rollback"]
        if rb:
            return "rolled-back", (f"rolled back from {rb.from_version} (slot {rb.from_slot.upper()}), "
                                   f"because {rb.reason}")
        p: api.PendingUpdate | None = out["pending"]
        if p and p.slot != out["running_slot"] and out["default_slot"] == p.slot:
            return "reboot-pending", f"{p.version} is installed in slot {p.slot.upper()}: reboot to start it"
        if p and p.slot == out["running_slot"]:
            return "on-trial", f"running {p.version} on trial: not blessed yet"
        lc: api.LastCheck | None = out["last_check"]
        if lc is None:
            return "not-checked", "ok"
        if lc.result == "up-to-date":
            return "up-to-date", "up to date"
        if lc.result == "error":
            return "check-failed", "ok"
        return "update-available", "ok"

    # -- check -------------------------------------------------------------------------------
    def check(self, from_dir: Path | None = None) -> api.CheckResult:
        running = self.running()
        e = self.esp()
        try:
            choice, seconds = self._choose(self._open(from_dir), e, running)
        except QxError as err:
            self.st.last_check = {"at": state.now_iso(), "result": "error", "error": err.message}
            self._record_error(err)
            self.checkin("check")
            raise
        rel = choice.release
        self.st.last_check = {"at": state.now_iso(), "result": "available" if rel else "up-to-date",
                              "version": rel.version if rel else None}
        self.save()
        self.checkin("check")
        waiting = e.slots().get(slots.other(running))
        installed = bool(rel and waiting and not waiting.name.bad and waiting.version == rel.version)
        running_version = self.running_version(e, running)
        found = (f"{rel.version} is installed in the other slot: reboot to start it" if rel and installed
                 else f"{rel.version} is available ({rel.root.length / 1024**2:.0f} MiB)" if rel else "up to date")
        return api.CheckResult(schema_version=api.SCHEMA_VERSION, running_version=running_version,
                               channel=self.cfg.channel, available=_summary(rel), installed=installed,
                               skipped=_skipped(choice), metadata_refresh_s=round(seconds, 3),
                               message=f"running {running_version} on {self.cfg.channel}: {found}")

    # -- apply -------------------------------------------------------------------------------
    def apply(self, from_source: Path | None = None) -> api.ApplyResult:
        try:
            res = self._apply(from_source)
        except QxError as err:
            self._record_error(err)
            self.checkin("apply")
            raise
        finally:
            shutil.rmtree(self.cfg.state_dir / "offline", ignore_errors=True)  # an unpacked tarball
        if from_source is None:  # offline hosts (USB stick) have no server to report to
            self.checkin("apply")
        return res

    def _apply(self, from_source: Path | None) -> api.ApplyResult:
        running = self.running()
        target = slots.other(running)
        e = self.esp()
        from qx_update import download, repo

        from_dir = repo.unpack_offline(from_source, self.cfg.state_dir / "offline") if from_source else None
        rp = self._open(from_dir)
        log.step("refreshing signed metadata")
        choice, _ = self._choose(rp, e, running)
        self.st.last_check = {"at": state.now_iso(), "result": "available" if choice.release else "up-to-date",
                              "version": choice.release.version if choice.release else None}
        rel = choice.release
        if rel is None:
            self.save()
            return api.ApplyResult(schema_version=api.SCHEMA_VERSION, applied=None, slot=None, entry=None,
                                   next_boot=e.default_slot(), skipped=_skipped(choice),
                                   message="no newer release for this host")
        installed = e.slots().get(target)
        if installed and not installed.name.bad and installed.version == rel.version and e.default_slot() == target:
            if slotinstall.pending_effective(self.st, e.slots()) is None:
                # The ESP holds the update but the state does not (restored from a backup, or written
                # by an older qx-update): record it, so bless raises the floor as after a plain apply.
                self.st.pending = {"slot": target, "version": rel.version, "security_epoch": rel.security_epoch,
                                   "from_slot": running, "from_version": self.running_version(e, running),
                                   "at": state.now_iso()}
                self.st.slots[target] = {"version": rel.version, "security_epoch": rel.security_epoch,
                                         "at": state.now_iso()}
            self.save()
            for p in self.cfg.download_dir.glob("*"):
                p.unlink(missing_ok=True)
            return api.ApplyResult(
                schema_version=api.SCHEMA_VERSION, applied=None, slot=target, entry=installed.name.filename,
                next_boot=target, skipped=_skipped(choice),
                message=f"{rel.version} is already installed in slot {target.upper()}: reboot to start it")
        uki_info = rp.targetinfo(rel.uki_path)
        try:
            uq = contract.ReleaseTarget.from_custom(contract.quantix_of(uki_info.unrecognized_fields.get("custom")))
        except contract.ContractError as err:
            raise VerificationError(f"{rel.uki_path}: its signed metadata is malformed: {err.message}") from err
        if uq.artifact != "uki" or uq.version != rel.version or uq.slot_sha256 != rel.slot_sha256:
            raise VerificationError(f"{rel.uki_path}: its signed metadata does not describe release {rel.version}")
        # Delta update (docs/update-format.md §5) when the release has signed chunk indexes; else (or for an
        # offline copy without the chunk store) the full payload, as before.
        from qx_update import delta as deltamod

        d = deltamod.Delta(rp, state_dir=self.cfg.state_dir, download_dir=self.cfg.download_dir,
                           deadline=self.cfg.download_deadline, progress=self.progress, offline_dir=from_dir)
        root_index = d.release_index(rel.version, "root", length=rel.slot_size, sha256=rel.slot_sha256)
        uki_index = d.release_index(rel.version, "uki", length=uki_info.length, sha256=uki_info.hashes["sha256"])
        from_version = self.running_version(e, running)
        target_entry = e.slots().get(target)
        target_version = self.st.slots.get(target, {}).get("version") or (target_entry.version if target_entry else None)
        log.step(f"downloading {rel.version}" + (" (delta)" if root_index else ""))
        # The UKI first (a few MiB, proven by TUF, or assembled from chunks and proven): a host enforcing
        # Secure Boot refuses a release its firmware would not boot before the root payload is fetched and
        # before anything is written to the slot or the ESP (qx_update.secureboot).
        uki_tally, root_tally = download.Tally(), download.Tally()
        uki = d.uki(uki_index, uki_info, esp_root=esp.find_esp(self.cfg.esp), running_version=from_version,
                    other_version=target_version) if uki_index else download.fetch(
            uki_info, rp.target_url(uki_info), self.cfg.download_dir, label="uki", progress=self.progress,
            deadline=self.cfg.download_deadline, tally=uki_tally)
        from qx_update import secureboot

        try:
            sb = secureboot.check_uki(uki, version=rel.version, efivars_dir=self.cfg.efivars_dir,
                                      cert=self.cfg.secure_boot_cert, target_root=f"root-{target}")
        except secureboot.UkiRefused as err:
            # A fact about this signed UKI and the certificate this host trusts, not a passing failure: the
            # release is not offered (nor downloaded) again until 'allow', another UKI for it or another
            # certificate on the host (_still_refused).
            self.st.refused[rel.version] = {
                "reason": err.reason, "at": state.now_iso(), "cause": "secure-boot",
                "uki_sha256": uki_info.hashes.get("sha256"), "cert_sha256": _file_sha256(self.cfg.secure_boot_cert)}
            self.st.event("refused", version=rel.version, cause="secure-boot", reason=err.reason)
            # What the last check offered is no longer on offer: say what is, now that this one is refused.
            after, _ = self._choose(rp, e, running, refresh=False)
            self.st.last_check = {"at": state.now_iso(), "result": "available" if after.release else "up-to-date",
                                  "version": after.release.version if after.release else None}
            self.save()
            uki.unlink(missing_ok=True)   # ~45 MB of the download cache, never used again
            raise
        # A verity release this host cannot seal (no verity partitions: installed before verity) is refused
        # now, before the root payload is fetched; write_and_switch checks it again (the installer's path).
        verity_path = self.cfg.verity[target]
        if slotinstall.verity_roothash(uki, verity_path, rel=_release(rel), target=target) is not None:
            slots.guard_verity(verity_path, field=f"verity.{target}", label=verity_label(target),
                               slot=self.cfg.slots[target],
                               running=self.cfg.slots[running], running_verity=self.cfg.verity[running])
        payload = None if root_index else download.fetch(
            rel.root, rp.target_url(rel.root), self.cfg.download_dir, label="root", progress=self.progress,
            crash_point="download", deadline=self.cfg.download_deadline, tally=root_tally)
        crashpoint.reached("downloaded")
        slot_path = self.cfg.slots[target]
        slots.guard_not_running(slot_path, self.cfg.slots[running])
        write = d.root_writer(root_index, slot_path=slot_path, target=target, running=running,
                              running_path=self.cfg.slots[running], running_version=from_version,
                              target_version=target_version) if root_index else None
        entry = slotinstall.write_and_switch(
            e=e, st=self.st, save=self.save, rel=_release(rel), payload=payload, uki=uki, target=target,
            running=running, slot_path=slot_path, verity_path=verity_path, from_version=from_version,
            tries=self.cfg.tries, progress=self.progress, write=write)
        for p in self.cfg.download_dir.glob("*"):   # keep the cache small: the slot now holds the release
            p.unlink(missing_ok=True)
        next_boot = e.default_slot()
        transfer = _transfers(d, uki=(uki_info.length, None if uki_index else (uki_tally, uki_info.length)),
                              root=(rel.slot_size, None if root_index else (root_tally, rel.root.length)))
        return api.ApplyResult(schema_version=api.SCHEMA_VERSION, applied=_summary(rel), slot=target,
                               entry=entry.name.filename, next_boot=next_boot, skipped=_skipped(choice),
                               transfer=transfer,
                               message=f"installed {rel.version} into slot {target.upper()} ({entry.name.filename}); "
                                       f"next boot: slot {(next_boot or '?').upper()}"
                                       + (f"; {d.summary()}" if d.summary() else "")
                                       + ("" if sb.verified else f"; {sb.note}"))

    # -- rollback ------------------------------------------------------------------------------
    def rollback(self) -> api.RollbackResult:
        running = self.running()
        other = slots.other(running)
        e = self.esp()
        entries = e.slots()
        default = e.default_slot()
        if default == other:
            # An installed update not booted yet: cancel it; the running slot stays the default.
            e.mark_bad(other)
            self.st.event("cancelled", slot=other, version=entries[other].version)
            self.st.pending = None
            self.save()
            return api.RollbackResult(
                schema_version=api.SCHEMA_VERSION, rolled_back=False, cancelled=entries[other].version,
                from_version=None, to_version=None, next_boot=e.default_slot(),
                message=f"cancelled the update to {entries[other].version}; slot {running.upper()} stays")
        ent = entries.get(other)
        if ent is None or ent.name.bad:
            raise UserError(f"slot {other.upper()} holds no bootable release to go back to",
                            hint="nothing to roll back to; install a release with qx-update apply")
        e.mark_bad(running)
        run_version = entries[running].version if running in entries else "?"
        self.st.rollback = {"from_version": run_version, "from_slot": running, "to_slot": other,
                            "reason": "the operator asked for it (qx-update rollback)", "at": state.now_iso()}
        self.st.pending = None
        self.st.event("rollback", from_version=run_version, to_version=ent.version)
        self.save()
        return api.RollbackResult(schema_version=api.SCHEMA_VERSION, rolled_back=True, cancelled=None,
                                  from_version=run_version, to_version=ent.version, next_boot=e.default_slot(),
                                  message="reboot to start slot " + other.upper())

    # -- after boot ------------------------------------------------------------------------------
    def gate(self, timeout: float | None = None, *, reboot_on_failure: bool = True) -> api.GateResult:
        """The health gate before boot-complete.target; records the verdict for this slot."""
        running = self.running()
        from qx_update import health

        ok, reason = health.wait(self.cfg.health_url, self.cfg.health_ca, self.cfg.gate_timeout if timeout is None else timeout)
        e = self.esp()
        ent = e.slots().get(running)
        self.st.gate[running] = {"ok": ok, "reason": reason, "at": state.now_iso(),
                                 "version": ent.version if ent else None}
        self.st.event("gate", slot=running, ok=ok, reason=reason)
        self.save()
        self.checkin("gate")  # before a failed trial reboots: the fleet sees the bad version
        counted = bool(ent and not ent.name.blessed)
        if not ok and counted and reboot_on_failure:
            # This boot counts against the slot's tries: reboot so systemd-boot tries again or falls back.
            _log.error("health gate failed (%s): rebooting to try again", reason)
            r.run(["systemctl", "reboot"], check=False)
        return api.GateResult(schema_version=api.SCHEMA_VERSION, ok=ok, reason=reason, slot=running,
                              counted_boot=counted)

    def blessed(self) -> api.BlessedResult:
        """After systemd-bless-boot: raise the epoch floor, clear a proven update, record a rollback."""
        running = self.running()
        e = self.esp()
        entries = e.slots()
        ent = entries.get(running)
        rb = self._detect_rollback(entries, running)
        if rb:
            self.st.rollback = rb
            self.st.refused[rb["from_version"]] = {"reason": rb["reason"], "at": state.now_iso()}
            self.st.pending = None
            self.st.error(f"rolled back from {rb['from_version']}, because {rb['reason']}")
            self.st.event("rolled-back", **{k: rb[k] for k in ("from_version", "reason")})
        if ent and ent.name.blessed:
            epoch = self.st.slots.get(running, {}).get("security_epoch")
            if isinstance(epoch, int) and epoch > self.st.security_epoch_floor:
                self.st.event("floor-raised", old=self.st.security_epoch_floor, new=epoch)
                self.st.security_epoch_floor = epoch
            if self.st.pending and self.st.pending["slot"] == running:
                self.st.event("blessed", version=self.st.pending["version"], slot=running)
                self.st.pending = None
        self.save()
        self.checkin("blessed")
        return api.BlessedResult(schema_version=api.SCHEMA_VERSION, slot=running,
                                 blessed=bool(ent and ent.name.blessed),
                                 security_epoch_floor=self.st.security_epoch_floor,
                                 rollback=_model(api.RollbackRecord, rb))

    def allow(self, version: str) -> api.AllowResult:
        """An operator clears a refused release: the next check may offer it again."""
        if version not in self.st.refused:
            raise UserError(f"{version} is not refused on this host",
                            hint="refused: " + (", ".join(sorted(self.st.refused)) or "none"))
        why = self.st.refused.pop(version)
        self.st.event("allowed", version=version, was=why.get("reason"))
        self.save()
        return api.AllowResult(schema_version=api.SCHEMA_VERSION, allowed=version,
                               message=f"{version} may be offered again")

    def channel_set(self, name: str) -> api.ChannelResult:
        self.cfg = cfgmod.set_override(self.cfg, "channel", name)
        self.st.event("channel", channel=name)
        self.save()
        return api.ChannelResult(schema_version=api.SCHEMA_VERSION, channel=self.cfg.channel,
                                 file=str(self.cfg.override))


def reboot_plan(window: str, now: dt.datetime) -> str | None:
    """None: reboot now. Else the HH:MM the window opens (for ``shutdown -r HH:MM``)."""
    if cfgmod.in_window(window, now):
        return None
    start, _ = cfgmod.parse_window(window)  # type: ignore[misc]
    return start.strftime("%H:%M")


_M = TypeVar("_M", bound=api.Model)


def _model(cls: type[_M], record: dict[str, Any] | None) -> _M | None:
    """A state.json record as its typed model (None stays None). The state is this package's own file;
    a record that does not fit is reported as the broken state it is."""
    if record is None:
        return None
    # Only the fields this release knows: the data partition outlives a slot, so a newer qx-update
    # (before a rollback to this one) may have written fields this one does not have.
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    try:
        return cls.from_dict({k: v for k, v in record.items() if k in known}, f"state.json {cls.__name__}")
    except api.SchemaError as e:
        raise EnvironmentError_(f"the update state is inconsistent: {e.message}",
                                hint="restore state.json from a backup, or remove it to start over") from e


def _release(rel: releases.Release) -> slotinstall.Release:
    """What the slot writer needs of a TUF-verified release."""
    return slotinstall.Release(version=rel.version, security_epoch=rel.security_epoch, slot_size=rel.slot_size,
                               slot_sha256=rel.slot_sha256, kernel_cmdline=rel.kernel_cmdline)


def _summary(rel: releases.Release | None) -> api.ReleaseSummary | None:
    if rel is None:
        return None
    return api.ReleaseSummary(version=rel.version, security_epoch=rel.security_epoch, slot_size=rel.slot_size,
                              download_size=rel.root.length, notes=rel.notes)


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _refused(r: dict[str, Any]) -> api.RefusedRelease:
    """A ``state.refused`` record as its model (records written before ``cause`` existed are rollbacks)."""
    return api.RefusedRelease(reason=str(r.get("reason", "")), at=str(r.get("at", "")),
                              cause="secure-boot" if r.get("cause") == "secure-boot" else "rolled-back")


def _transfers(d: delta.Delta, **images: tuple[int, tuple[download.Tally, int] | None]) -> list[api.Transfer]:
    """How each image reached the host, for ``ApplyResult.transfer``. Per image: its size and, for an image
    without a chunk index, the tally of its whole-payload download with the payload's length (None: the
    delta writer's counts in ``d.stats``). Fetched bytes include the chunk indexes fetched for the image."""
    out = []
    for image, (size, whole) in images.items():
        indexes = d.index_bytes.get(image, 0)
        s = d.stats.get(image)
        if s is not None:
            out.append(api.Transfer(image=image, path=s.path, size=size, fetched_bytes=s.fetched_bytes + indexes,
                                    reused_bytes=s.reused_bytes))
        elif whole is not None:
            tally, length = whole
            # Nothing received: the verified file was in the download cache (an interrupted earlier apply).
            out.append(api.Transfer(image=image, path="payload" if tally.received else "cached", size=size,
                                    fetched_bytes=tally.received + indexes,
                                    reused_bytes=max(0, length - tally.received)))
    return out


def _skipped(choice: releases.Choice) -> list[api.SkippedRelease]:
    return [api.SkippedRelease(version=s["version"], reason=s["reason"]) for s in choice.skipped]
