"""The host's VM VLANs for programs (qx-node's ``POST /v1/networks {"vlan"}``): add or remove one.

``python -m qx_console.vmnet [--root DIR] [--files-only] add|remove VID`` — qx-node runs it through
``qx_common.run`` (it may not import the console: tests/common/test_boundaries.py). It prints one JSON
object, ``{"vlan", "bridge", "vm_vlans", "changed", "kept", "reason"}``, and exits 0 when the change is in
effect, 4 when applying it failed and the previous configuration was restored, 2 for bad input (the
error names the field).

Call order, the console's own (one home for host networking):

1. load the stored :class:`~qx_console.hostconfig.HostConfig` (an unreadable one is an error, exit 4:
   a change never builds on defaults), change ``network.vm_vlans`` (adding a VLAN that is there, or
   removing one that is not, changes nothing and says so);
2. :func:`qx_console.safeapply.safe_apply`: validate, write (the current files kept as "previous"),
   mark pending, activate (networkd reload and reconfigure), probe the gateway and DNS — a failure
   restores the previous configuration. The confirmation step is the caller's request itself: no
   operator waits at a screen for an API call. A console that dies half-way reverts at its next start
   (``recover_interrupted``), as for any network change.

``--files-only`` writes the validated configuration and its networkd files without activating them
(networkd applies them at its next start); it is how this runs where networkd does not (the tests on
the build machine, whose kernel cannot create VLAN devices at all).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from qx_common.cli import main_wrapper
from qx_common.errors import ExternalError, QxError, UserError

from qx_console.hostconfig import HostConfig, NetworkConfig, check_vlan, validate
from qx_console.linux import LinuxBackend
from qx_console.safeapply import safe_apply


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qx_console.vmnet", description="add or remove a VLAN offered to VMs")
    p.add_argument("--root", type=Path, default=Path("/"), help="host root directory (tests)")
    p.add_argument("--files-only", action="store_true", help="write the configuration, do not activate it")
    p.add_argument("--debug", action="store_true")
    p.add_argument("action", choices=("add", "remove"))
    p.add_argument("vlan", type=int)
    return p


def change(cfg: HostConfig, action: str, vid: int) -> HostConfig:
    """``cfg`` with VLAN ``vid`` added to or removed from the VM VLANs (validated)."""
    if (e := check_vlan(vid, "vlan")) is not None:
        raise UserError(f"vlan: {e.message}", hint=e.hint)
    have = cfg.network.vm_vlans
    vlans = tuple(sorted({*have, vid})) if action == "add" else tuple(v for v in have if v != vid)
    new = replace(cfg, network=replace(cfg.network, vm_vlans=vlans))
    validate(new)  # a ValidationError (a UserError) names the field: network.vm_vlans
    return new


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    backend = LinuxBackend(args.root)
    try:  # not load_config(): the console shows defaults for an unreadable file, a change must not build on them
        cfg = backend.store.load()
    except (QxError, ValueError) as e:
        raise ExternalError(f"the stored host configuration cannot be read: {e}",
                            hint="nothing was changed; set the network again at the host's console") from e
    new = change(cfg, args.action, args.vlan)
    out = {"vlan": args.vlan, "bridge": NetworkConfig.vm_vlan_bridge(args.vlan), "vm_vlans": list(new.network.vm_vlans),
           "changed": new != cfg}
    if new == cfg:
        out.update(kept=True, reason="nothing to change")
    elif args.files_only:
        backend.network.write(new)
        out.update(kept=True, reason="written; networkd applies it at its next start")
    else:
        outcome = safe_apply(backend, new, confirm=lambda _seconds: True)
        out.update(kept=outcome.kept, reason=outcome.reason)
        if not outcome.kept:
            print(json.dumps(out))
            raise ExternalError(f"vlan: the host network did not take VLAN {args.vlan}: {outcome.reason}",
                                  hint="the previous network configuration is back; check the switch port "
                                       "and the management network at the console")
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_wrapper(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
