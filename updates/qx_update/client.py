"""The update workflows behind the CLI: status, check, apply, rollback, gate, blessed.

apply, in this order (each step leaves the running slot the default and untouched until the switch):

1. refresh TUF metadata (:mod:`repo`), choose a release (:mod:`releases`);
2. download root payload and UKI, resumable, verified by TUF (:mod:`download`);
3. remove the inactive slot's boot entry, write the slot and read it back (:mod:`slots`);
4. record ``pending`` in the state (:mod:`state`) — before the switch, so a power cut cannot lose it;
5. copy the UKI and write ``quantix-<slot>+3.conf`` (:mod:`esp`) — the switch.
Steps 3–5 are :func:`qx_update.slotinstall.write_and_switch`, shared with the installer's upgrade.
A release whose trial boot failed its health gate is refused on this host from then on
(``state.refused``) until ``qx-update allow VERSION``; a newer release is offered as usual.

After the reboot, ``qx-update gate`` (before ``boot-complete.target``) decides whether systemd blesses
the boot; ``qx-update blessed`` (after ``systemd-bless-boot.service``) then raises the security-epoch
floor, or records an automatic rollback with the gate's reason when the new slot's tries ran out.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qx_common import log
from qx_common import run as r
from qx_common.errors import EnvironmentError_, QxError, UserError
from qx_update import config as cfgmod
from qx_update import contract, crashpoint, esp, slotinstall, slots, state
from qx_update.errors import VerificationError

# download/repo/releases (tuf, urllib3: ~0.15 s of imports) and health are imported where they are
# used, so the boot-time commands (status, gate, blessed) start without them.
if TYPE_CHECKING:
    from qx_update import releases, repo

_log = log.get("update")


class Client:
    def __init__(self, cfg: cfgmod.Config, *, progress: bool = True) -> None:
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
        self._lock_fd = fd
        self.st = state.load(self.cfg.state_file)  # re-read under the lock

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

    def _choose(self, rp: repo.Repo, e: esp.Esp, running: str) -> tuple[releases.Choice, float]:
        seconds = rp.refresh()
        hid = state.host_id(self.st, self.cfg.host_id_file)
        from qx_update import releases

        capacity = slots.size_of(self.cfg.slots[slots.other(running)])
        choice = releases.choose(rp.targets(), channel=self.cfg.channel, running_version=self.running_version(e, running),
                                 floor=self.st.security_epoch_floor, slot_capacity=capacity, host_id=hid,
                                 refused={v: str(r.get("reason", "")) for v, r in self.st.refused.items()})
        return choice, seconds

    def checkin(self, event: str) -> dict[str, Any] | None:
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
        return self.st.last_checkin

    def _record_error(self, err: QxError) -> None:
        self.st.error(err.message)
        self.st.event("error", message=err.message)
        self.save()

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        running = self.running()
        out: dict[str, Any] = {"channel": self.cfg.channel, "server_url": self.cfg.server_url,
                               "running_slot": running, "security_epoch_floor": self.st.security_epoch_floor,
                               "last_check": self.st.last_check, "last_error": self.st.last_error,
                               "pending": None, "maintenance_window": self.cfg.maintenance_window,
                               "refused": self.st.refused,
                               "trusted_root": self.cfg.trusted_root.exists(), "last_checkin": self.st.last_checkin}
        try:
            e = self.esp()
            entries = e.slots()
            default = e.default_slot()
        except QxError as err:
            entries, default = {}, None
            out["esp_error"] = err.message
        out["default_slot"] = default
        out["pending"] = slotinstall.pending_effective(self.st, entries)
        out["slots"] = {}
        for s in ("a", "b"):
            ent = entries.get(s)
            out["slots"][s] = {
                "device": str(self.cfg.slots[s]),
                "version": ent.version if ent else None,
                "active": s == running, "next_boot": s == default,
                "blessed": bool(ent and ent.name.blessed), "bad": bool(ent and ent.name.bad),
                "tries_left": ent.name.tries_left if ent else None,
                "tries_done": ent.name.tries_done if ent else None,
                "entry": ent.name.filename if ent else None,
                "security_epoch": self.st.slots.get(s, {}).get("security_epoch"),
            }
        rb = self._detect_rollback(entries, running)
        out["rollback"] = rb or self.st.rollback
        out["message"] = self._message(out)
        return out

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

    def _message(self, out: dict[str, Any]) -> str:
        if not out["trusted_root"]:
            return f"no trusted root: this image was built without an update key ({self.cfg.trusted_root})"
        rb = out["rollback"]
        if rb:
            return f"rolled back from {rb['from_version']} (slot {rb['from_slot'].upper()}), because {rb['reason']}"
        p = out["pending"]
        if p and p["slot"] != out["running_slot"] and out["default_slot"] == p["slot"]:
            return f"{p['version']} is installed in slot {p['slot'].upper()}: reboot to start it"
        if p and p["slot"] == out["running_slot"]:
            return f"running {p['version']} on trial: not blessed yet"
        return "up to date" if (out["last_check"] or {}).get("result") == "up-to-date" else "ok"

    # -- check -------------------------------------------------------------------------------
    def check(self, from_dir: Path | None = None) -> dict[str, Any]:
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
        return {"running_version": self.running_version(e, running), "channel": self.cfg.channel,
                "available": rel.summary() if rel else None, "installed": installed, "skipped": choice.skipped,
                "metadata_refresh_s": round(seconds, 3)}

    # -- apply -------------------------------------------------------------------------------
    def apply(self, from_source: Path | None = None) -> dict[str, Any]:
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

    def _apply(self, from_source: Path | None) -> dict[str, Any]:
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
            return {"applied": None, "message": "no newer release for this host", "skipped": choice.skipped}
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
            return {"applied": None, "slot": target, "next_boot": target, "skipped": choice.skipped,
                    "message": f"{rel.version} is already installed in slot {target.upper()}: reboot to start it"}
        uki_info = rp.targetinfo(rel.uki_path)
        try:
            uq = contract.ReleaseTarget.from_custom(contract.quantix_of(uki_info.unrecognized_fields.get("custom")))
        except contract.ContractError as err:
            raise VerificationError(f"{rel.uki_path}: its signed metadata is malformed: {err.message}") from err
        if uq.artifact != "uki" or uq.version != rel.version or uq.slot_sha256 != rel.slot_sha256:
            raise VerificationError(f"{rel.uki_path}: its signed metadata does not describe release {rel.version}")
        log.step(f"downloading {rel.version}")
        payload = download.fetch(rel.root, rp.target_url(rel.root), self.cfg.download_dir, label="root",
                                 progress=self.progress, crash_point="download",
                                 deadline=self.cfg.download_deadline)
        uki = download.fetch(uki_info, rp.target_url(uki_info), self.cfg.download_dir, label="uki",
                             progress=self.progress, deadline=self.cfg.download_deadline)
        crashpoint.reached("downloaded")
        slot_path = self.cfg.slots[target]
        slots.guard_not_running(slot_path, self.cfg.slots[running])
        from_version = self.running_version(e, running)
        entry = slotinstall.write_and_switch(
            e=e, st=self.st, save=self.save, rel=slotinstall.Release(
                version=rel.version, security_epoch=rel.security_epoch, slot_size=rel.slot_size,
                slot_sha256=rel.slot_sha256, kernel_cmdline=rel.kernel_cmdline),
            payload=payload, uki=uki, target=target, running=running, slot_path=slot_path,
            from_version=from_version, tries=self.cfg.tries, progress=self.progress)
        for p in self.cfg.download_dir.glob("*"):   # keep the cache small: the slot now holds the release
            p.unlink(missing_ok=True)
        return {"applied": rel.summary(), "slot": target, "entry": entry.name.filename,
                "next_boot": e.default_slot()}

    # -- rollback ------------------------------------------------------------------------------
    def rollback(self) -> dict[str, Any]:
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
            return {"rolled_back": False, "cancelled": entries[other].version, "next_boot": e.default_slot(),
                    "message": f"cancelled the update to {entries[other].version}; slot {running.upper()} stays"}
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
        return {"rolled_back": True, "from_version": run_version, "to_version": ent.version,
                "next_boot": e.default_slot(), "message": "reboot to start slot " + other.upper()}

    # -- after boot ------------------------------------------------------------------------------
    def gate(self, timeout: float | None = None, *, reboot_on_failure: bool = True) -> dict[str, Any]:
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
        return {"ok": ok, "reason": reason, "slot": running, "counted_boot": counted}

    def blessed(self) -> dict[str, Any]:
        """After systemd-bless-boot: raise the epoch floor, clear a proven update, record a rollback."""
        running = self.running()
        e = self.esp()
        entries = e.slots()
        ent = entries.get(running)
        out: dict[str, Any] = {"slot": running, "blessed": bool(ent and ent.name.blessed)}
        rb = self._detect_rollback(entries, running)
        if rb:
            self.st.rollback = rb
            self.st.refused[rb["from_version"]] = {"reason": rb["reason"], "at": state.now_iso()}
            self.st.pending = None
            self.st.error(f"rolled back from {rb['from_version']}, because {rb['reason']}")
            self.st.event("rolled-back", **{k: rb[k] for k in ("from_version", "reason")})
            out["rollback"] = rb
        if ent and ent.name.blessed:
            epoch = self.st.slots.get(running, {}).get("security_epoch")
            if isinstance(epoch, int) and epoch > self.st.security_epoch_floor:
                self.st.event("floor-raised", old=self.st.security_epoch_floor, new=epoch)
                self.st.security_epoch_floor = epoch
            if self.st.pending and self.st.pending["slot"] == running:
                self.st.event("blessed", version=self.st.pending["version"], slot=running)
                self.st.pending = None
        out["security_epoch_floor"] = self.st.security_epoch_floor
        self.save()
        self.checkin("blessed")
        return out

    def allow(self, version: str) -> dict[str, Any]:
        """An operator clears a refused release: the next check may offer it again."""
        if version not in self.st.refused:
            raise UserError(f"{version} is not refused on this host",
                            hint="refused: " + (", ".join(sorted(self.st.refused)) or "none"))
        why = self.st.refused.pop(version)
        self.st.event("allowed", version=version, was=why.get("reason"))
        self.save()
        return {"allowed": version, "message": f"{version} may be offered again"}

    def channel_set(self, name: str) -> dict[str, Any]:
        self.cfg = cfgmod.set_override(self.cfg, "channel", name)
        self.st.event("channel", channel=name)
        self.save()
        return {"channel": self.cfg.channel, "file": str(self.cfg.override)}


def reboot_plan(window: str, now: dt.datetime) -> str | None:
    """None: reboot now. Else the HH:MM the window opens (for ``shutdown -r HH:MM``)."""
    if cfgmod.in_window(window, now):
        return None
    start, _ = cfgmod.parse_window(window)  # type: ignore[misc]
    return start.strftime("%H:%M")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
