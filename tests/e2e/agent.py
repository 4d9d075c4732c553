"""The e2e OTA test's agent *inside the guest* (stdlib only; baked into test releases by derive.py).

It plays the operator at the host's console: after every boot (ordered after boot-complete.target
and the bless step) it reports the running version, the kernel command line and ``qx-update status``
on ttyS1, and, following ``plan.json`` next to it, configures the update server and runs
``qx-update apply --reboot`` for the release that should follow the running one. Each line it
writes starts with ``QX-E2E <event> `` followed by one JSON document, which the test parses.

It applies a given target once (a marker on the data partition, written before the apply), so a
boot that comes back to the same version after a rollback only reports.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATE = Path("/var/lib/qx-e2e")
QX_UPDATE = "/usr/lib/quantix/venv/bin/qx-update"
OVERRIDE = Path("/var/lib/quantix/config/update.toml")


def _version() -> str:
    for line in Path("/usr/lib/os-release").read_text().splitlines():
        if line.startswith("IMAGE_VERSION="):
            return line.partition("=")[2].strip().strip('"')
    return "?"


class Agent:
    def __init__(self) -> None:
        self.plan = json.loads((HERE / "plan.json").read_text())
        self.out = open("/dev/ttyS1", "w", buffering=1)  # noqa: SIM115 - lives as long as the agent

    def say(self, event: str, **data: object) -> None:
        print(f"QX-E2E {event} {json.dumps(data, sort_keys=True)}", file=self.out, flush=True)

    def qx(self, *args: str, timeout: float = 1800) -> tuple[int, str, str]:
        p = subprocess.run([QX_UPDATE, "--json", *args], capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr

    def status(self) -> object:
        rc, out, err = self.qx("status")
        try:
            return json.loads(out) if rc == 0 else {"error": err.strip()[-800:]}
        except ValueError:
            return {"error": f"not JSON: {out[-800:]}"}

    def run(self) -> None:
        STATE.mkdir(parents=True, exist_ok=True)
        boots = STATE / "boots"
        n = int(boots.read_text()) + 1 if boots.exists() else 1
        boots.write_text(str(n))
        version = _version()
        self.say("boot", n=n, version=version, cmdline=Path("/proc/cmdline").read_text().strip(),
                 machine_id=Path("/etc/machine-id").read_text().strip(), status=self.status())
        if not OVERRIDE.exists():
            # What an operator sets on a new host: the update server, the channel, and (a lab's choice)
            # one boot try and a short health gate, so a bad release is abandoned quickly.
            OVERRIDE.parent.mkdir(parents=True, exist_ok=True)
            OVERRIDE.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in self.plan["settings"].items()))
            token = OVERRIDE.parent / "update-checkin-token"  # so the server's fleet view sees this host
            token.write_text(self.plan["checkin_token"] + "\n")
            token.chmod(0o600)
        probed = STATE / "console-probed"
        if not probed.exists():
            # Once, on the first boot: the console's real host backend against the real systemd.
            probed.write_text(version)
            p = subprocess.run(["/usr/lib/quantix/venv/bin/python", str(HERE / "console_probe.py")],
                               capture_output=True, text=True, timeout=600)
            try:
                result = json.loads(p.stdout)
            except ValueError:
                result = {"error": f"exit {p.returncode}: {p.stdout[-500:]} {p.stderr[-1500:]}"}
            self.say("console", **result)
        target = self.plan["next"].get(version)
        marker = STATE / f"applied-{target}"
        if target is None or marker.exists():
            self.say("idle", version=version)
            return
        deadline = time.monotonic() + self.plan["wait_for_release_s"]
        while True:
            rc, out, err = self.qx("check", timeout=300)
            try:
                available = (json.loads(out).get("available") or {}).get("version") if rc == 0 else None
            except ValueError:
                available = None
            if available == target:
                break
            if time.monotonic() > deadline:
                self.say("gave-up", waiting_for=target, rc=rc, stdout=out[-800:], stderr=err[-800:])
                return
            time.sleep(5)
        marker.write_text(version)
        self.say("applying", version=target)
        started = time.monotonic()
        # "apply --reboot" reboots before its result is printed and read (the reboot may stop this unit
        # first); for a target in "reboot_after_apply" the agent applies, reports the result, then reboots.
        separate = target in self.plan.get("reboot_after_apply", [])
        rc, out, err = self.qx("apply") if separate else self.qx("apply", "--reboot")
        lines = out.strip().splitlines()
        self.say("applied", rc=rc, seconds=round(time.monotonic() - started, 1),
                 result=lines[-1] if lines else "", stderr=err.strip()[-1500:])
        if separate and rc == 0:
            subprocess.run(["systemctl", "reboot"], check=False)


if __name__ == "__main__":
    try:
        Agent().run()
    except Exception as e:  # report, never hang the test on a silent agent
        with open("/dev/ttyS1", "w") as tty:
            print(f"QX-E2E crashed {json.dumps({'error': repr(e)})}", file=tty, flush=True)
        sys.exit(1)
