"""The whole over-the-air path on the real image in QEMU: update, bless, and automatic rollback.

1. The built release N (with the test server's trust root and the test agent, see derive.py) boots
   from slot A. The real update server runs on 127.0.0.1; the guest reaches it at
   ``http://10.0.2.100:8400/`` through QEMU's guestfwd (tests/e2e/relay.py), nothing else. On this
   first boot the console's real host backend is exercised against the real systemd too (SSH on
   with its off-timer and off, host key fingerprints, journal views, service states and a restart).
2. While N boots, N+1 and N+2 are derived, and N and then N+1 published with ``qx-release``; in the
   guest ``qx-update apply`` takes N+1 as a delta (only the chunks that differ from the slot it runs,
   which apply's ``transfer`` reports), writes slot B and installs N+1's UKI with a boot counter; the
   agent reboots. The host comes back on slot B running N+1, the health gate passes,
   systemd-bless-boot blesses it, and the security-epoch floor rises.
3. N+2, whose qx-node is masked, is published and applied with ``qx-update apply --reboot``. Its health gate fails at
   once (systemd says qx-node cannot start; the gate does not wait out its timeout), the failed trial
   boot reboots, systemd-boot finds no tries left and boots slot B (N+1) by itself, and
   ``qx-update status`` says it rolled back from N+2 and why.

The guest runs under the enforcing Secure Boot firmware, its certificate enrolled: every UKI (each derived
release's, sealed with its own root hash and signed again) is checked by the firmware and by qx-update,
and each slot is reached by the root hash on its UKI's signed command line (dm-verity), since
systemd-stub ignores the boot entries' options with Secure Boot on.

The guest is told (host override file, as an operator would set it) to give a new slot one boot try
and its gate five minutes: the default three tries would triple the slowest part of the test.
"""

from __future__ import annotations

import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from qx_build.paths import Release
from qx_build.qemu import GUEST_SERVICE_ADDR
from tests.e2e.conftest import BOOT_TIMEOUT
from tests.e2e.derive import Derived, RootTree, bump, disk_with_root_a
from tests.e2e.guest import BootedGuest
from tests.update_server.conftest import ALL, make_token, qx_release, start_server

GUEST_PORT = 8400
GATE_TIMEOUT = 300  # s; a good boot's gate passes in well under this on TCG (it returns at the first 200)
APPLY_TIMEOUT = 1200  # s, check + download + slot write + read-back under TCG
RELAY = Path(__file__).resolve().parent / "relay.py"
# The agent reported a failed apply, gave up waiting for a release, or crashed: stop at once.
AGENT_FAILED = r'QX-E2E (?:applied \{"rc": [1-9].*|gave-up .*|crashed .*)'


class Agent:
    """Reads the test agent's ``QX-E2E <event> {json}`` lines from the guest's ttyS1, in order."""

    def __init__(self, guest: BootedGuest) -> None:
        self.guest = guest
        self.offset = 0

    def next(self, event: str, timeout: float) -> dict[str, Any]:
        m = self.guest.wait_for(rf"QX-E2E {event} (\{{.*\}})\n", timeout, agent=True, after=self.offset,
                                fail=AGENT_FAILED)
        self.offset = m.end()
        return json.loads(m.group(1))

    def next_boot_of(self, version: str, timeout: float) -> dict[str, Any]:
        """The next boot report of ``version`` (skipping reports of other versions on the way)."""
        while True:
            boot = self.next("boot", timeout)
            if boot["version"] == version:
                return boot


def _assert_console_backend_on_real_systemd(c: dict[str, Any]) -> None:
    """What tests/e2e/console_probe.py saw the console's LinuxBackend do on the booted host."""
    errors = {k: v for k, v in c.items() if isinstance(v, dict) and "error" in v and k != "services"}
    assert not errors, errors
    # SSH: off by default; on with an off-timer that systemd holds; fingerprints of the host keys; off.
    assert (c["ssh_before"], c["ssh_on"], c["ssh_off_timer"]) == ("inactive", "active", "active"), c
    assert c["fingerprints"] and all("SHA256:" in f for f in c["fingerprints"]), c["fingerprints"]
    assert (c["ssh_after"], c["ssh_off_timer_after"]) == ("inactive", "inactive"), c
    # Logs from the real journal: qx-node's unit, the kernel, a filtered system view.
    assert any("qx-node" in line for line in c["logs_qx_node"]), c["logs_qx_node"]
    assert c["logs_kernel_count"] > 0 and c["logs_grep"], c
    # Services as systemd reports them, and a restart through the console's path.
    assert {k: c["services"][k] for k in ("qx-node", "libvirtd", "systemd-networkd")} == \
        {"qx-node": "active", "libvirtd": "active", "systemd-networkd": "active"}, c["services"]
    assert c["resolved_after_restart"] == "active", c


@pytest.mark.root
@pytest.mark.timeout(3600)
def test_update_is_blessed_and_a_release_failing_its_health_gate_rolls_back(
        release: Release, guest_factory, tmp_path: Path) -> None:
    server = start_server(tmp_path / "server")
    background = ThreadPoolExecutor(max_workers=1)
    try:
        token = make_token(server.data_dir, *ALL)
        qx_release(server, token, "keys", "init")
        trust_root = requests.get(f"{server.url}/metadata/1.root.json", timeout=10).content
        n, n1, n2 = release.version, bump(release.version, 1), bump(release.version, 2)
        plan = {"settings": {"server_url": f"http://{GUEST_SERVICE_ADDR}:{GUEST_PORT}/", "channel": "dev",
                             "tries": 1, "gate_timeout": GATE_TIMEOUT},
                "next": {n: n1, n1: n2}, "reboot_after_apply": [n1], "wait_for_release_s": 1800,
                "checkin_token": make_token(server.data_dir, "checkin")}
        tree = RootTree(release, tmp_path / "derive")
        rel_n = tree.make(n, trust_root=trust_root, plan=plan)
        disk = disk_with_root_a(release.disk, rel_n, tmp_path / f"quantix-os_{n}-e2e.raw")

        port = int(server.url.rsplit(":", 1)[1])
        # Under the enforcing Secure Boot firmware trusting the release's certificate: systemd-stub then boots
        # each UKI's own signed command line (entry options are ignored), so slot B is reached only through
        # N+1's root hash — what dm-verity's discovery is for.
        guest = guest_factory(disk=disk, secure_boot=True,
                              guest_services=[(GUEST_PORT, f"{sys.executable} {RELAY} 127.0.0.1 {port}")])
        agent = Agent(guest)

        def derive_and_publish() -> tuple[Derived, Derived]:
            # While N boots (minutes under TCG): N+1 and N+2 are derived, and N then N+1 published. N is on
            # the server so the host finds N's signed chunk index and takes N+1 as a delta, seeded from the
            # slot it runs.
            rel_n1 = tree.make(n1, trust_root=trust_root, plan=plan, security_epoch=1)
            rel_n2 = tree.make(n2, trust_root=trust_root, plan=plan, security_epoch=1, masked=("qx-node.service",))
            qx_release(server, token, "publish", "--channel", "dev", str(rel_n.release_dir))
            qx_release(server, token, "publish", "--channel", "dev", str(rel_n1.release_dir))
            return rel_n1, rel_n2

        derived = background.submit(derive_and_publish)

        # 1. Release N on slot A finds N+1 on its channel and applies it.
        boot = agent.next("boot", BOOT_TIMEOUT)
        machine_id = boot["machine_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", machine_id), boot
        print(f"N={n} reported from slot A {guest.elapsed():.0f} s after QEMU start")
        st = boot["status"]
        # Slot A's root is N's dm-verity device: its UKI's root hash named slot A's partitions.
        assert boot["version"] == n and f"roothash={rel_n.tree.roothash}" in boot["cmdline"].split(), boot
        assert "root=/dev/mapper/root" in boot["cmdline"].split(), boot
        assert st["running_slot"] == "a" and st["trusted_root"] is True, st
        assert st["secure_boot"]["state"] == "enabled" and st["secure_boot"]["checks_releases"] is True, st
        _assert_console_backend_on_real_systemd(agent.next("console", 600))
        rel_n1, rel_n2 = derived.result(timeout=1200)
        assert agent.next("applying", 600)["version"] == n1
        # The agent applies N+1 and reboots by itself afterwards (plan "reboot_after_apply"), so apply's
        # result reaches the test: N+1 came as a delta, only the changed chunks fetched.
        applied = agent.next("applied", APPLY_TIMEOUT)
        res = json.loads(applied["result"])
        transfer = {t["image"]: t for t in res["transfer"]}
        full_payload = sum(f.stat().st_size for f in rel_n1.release_dir.glob("*.root.erofs.zst")) + \
            sum(f.stat().st_size for f in rel_n1.release_dir.glob("*.efi"))
        fetched = sum(t["fetched_bytes"] for t in res["transfer"])
        print(f"N+1 applied in {applied['seconds']} s: fetched {fetched} of {full_payload} bytes; {res['message']}")
        assert (transfer["root"]["path"], transfer["uki"]["path"]) == ("delta", "delta"), res
        assert fetched < full_payload / 10, (fetched, full_payload, res)

        # 2. Back on slot B running N+1: gate passed, blessed, floor raised to N+1's epoch.
        boot = agent.next_boot_of(n1, APPLY_TIMEOUT + BOOT_TIMEOUT)
        print(f"N+1={n1} booted from slot B {guest.elapsed():.0f} s after QEMU start")
        st = boot["status"]
        assert f"roothash={rel_n1.tree.roothash}" in boot["cmdline"].split(), boot
        # Host identity lives on the data partition: the same machine id in every slot and boot.
        assert boot["machine_id"] == machine_id, (boot["machine_id"], machine_id)
        assert st["running_slot"] == "b" and st["slots"]["b"]["version"] == n1, st
        assert st["slots"]["b"]["blessed"] is True and st["slots"]["b"]["entry"] == "quantix-b.conf", st
        assert st["security_epoch_floor"] == 1 and st["pending"] is None and not st["rollback"], st
        assert st["slots"]["a"]["version"] == n and st["slots"]["a"]["bad"] is False, st

        # 3. N+2 fails its health gate; the host returns to N+1 by itself.
        qx_release(server, token, "publish", "--channel", "dev", str(rel_n2.release_dir))
        assert agent.next("applying", 600)["version"] == n2
        boot = agent.next_boot_of(n1, APPLY_TIMEOUT + 2 * BOOT_TIMEOUT + GATE_TIMEOUT)
        print(f"back on N+1 after the failed N+2 trial {guest.elapsed():.0f} s after QEMU start")
        st = boot["status"]
        assert f"roothash={rel_n1.tree.roothash}" in boot["cmdline"].split(), boot
        assert boot["machine_id"] == machine_id, (boot["machine_id"], machine_id)
        assert st["running_slot"] == "b" and st["slots"]["b"]["blessed"] is True, st
        assert st["slots"]["a"]["bad"] is True and st["slots"]["a"]["version"] == n2, st
        rb = st["rollback"]
        assert rb and rb["from_version"] == n2 and rb["from_slot"] == "a" and rb["to_slot"] == "b", st
        # The gate's own verdict, not a guess: systemd's word that qx-node cannot start in this boot, given
        # at once (the gate does not wait out its timeout for a masked unit).
        assert "qx-node.service is masked" in rb["reason"], rb
        assert st["message"].startswith(f"rolled back from {n2}"), st
        # N+2's trial boot really happened (it is not merely skipped): systemd-boot counted its try.
        assert st["slots"]["a"]["tries_done"] == 1, st

        # The update server's fleet view saw it all: the host checked in, and is back on N+1, degraded.
        reader = {"Authorization": f"Bearer {make_token(server.data_dir, 'read')}"}
        hosts = requests.get(f"{server.url}/v1/fleet", headers=reader, timeout=10).json()["hosts"]
        assert [h["host_id"] for h in hosts] == [machine_id], hosts
        assert (hosts[0]["version"], hosts[0]["slot"], hosts[0]["channel"]) == (n1, "b", "dev"), hosts
        assert hosts[0]["health"] == "degraded" and n2 in (hosts[0]["last_error"] or ""), hosts
    finally:
        background.shutdown(wait=True)  # a failure before N+1 was needed: let the derivation end first
        server.stop()
