"""Safe apply of a management-network change: write, activate, probe, confirm — or revert by itself.

Call order (:func:`safe_apply`, run in a worker thread)::

    backend.write_network(new)        # keeps the current configuration as "previous" first
    backend.mark_pending(...)         # a console that dies from here on reverts at its next start
    backend.activate_network()
    backend.probe(new.network)        # gateway + DNS; any failure -> revert now
    confirm(deadline_s)               # the operator has deadline_s to say "keep"; silence -> revert
    backend.mark_pending(None)

Invariant: when :func:`safe_apply` returns, the files on disk and the running network agree, and they
are either the new configuration (probe passed and the operator confirmed) or exactly the previous one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from qx_common import log
from qx_console.backend import HostBackend, ProbeResult
from qx_console.hostconfig import HostConfig, validate

CONFIRM_SECONDS = 60.0
_log = log.get("console.safeapply")


@dataclass
class ApplyOutcome:
    kept: bool
    reason: str
    probes: list[ProbeResult] = field(default_factory=list)


def safe_apply(
    backend: HostBackend,
    new: HostConfig,
    confirm: Callable[[float], bool],
    *,
    confirm_seconds: float = CONFIRM_SECONDS,
    on_step: Callable[[str], None] = lambda s: None,
) -> ApplyOutcome:
    """Apply ``new``; keep it only if the probes pass and ``confirm(confirm_seconds)`` returns True."""
    validate(new)  # nothing is written for bad input
    on_step("writing configuration")
    backend.write_network(new)
    backend.mark_pending({"since": time.time(), "deadline_s": confirm_seconds})
    try:
        on_step("activating")
        backend.activate_network()
        on_step("probing gateway and DNS")
        probes = backend.probe(new.network)
    except Exception as e:  # activation failed half-way: the old network is the safe one
        _log.warning("network apply failed, restoring the previous configuration: %s", e)
        _revert(backend, on_step)
        return ApplyOutcome(False, f"apply failed ({e}); previous configuration restored")
    failed = [p for p in probes if not p.ok]
    if failed:
        _revert(backend, on_step)
        names = "; ".join(f"{p.what} {p.target}: {p.detail}" for p in failed)
        return ApplyOutcome(False, f"network check failed ({names}); previous configuration restored", probes)
    on_step("waiting for confirmation")
    if not confirm(confirm_seconds):
        _revert(backend, on_step)
        return ApplyOutcome(False, "not confirmed in time; previous configuration restored", probes)
    backend.mark_pending(None)
    return ApplyOutcome(True, "new configuration kept", probes)


def _revert(backend: HostBackend, on_step: Callable[[str], None]) -> None:
    on_step("restoring previous configuration")
    backend.restore_previous_network()
    backend.mark_pending(None)


def recover_interrupted(backend: HostBackend) -> bool:
    """At console start: a safe-apply that never finished (crash, restart) is reverted. True if it was."""
    if backend.pending() is None:
        return False
    _log.warning("an unconfirmed network change was pending: restoring the previous configuration")
    backend.restore_previous_network()
    backend.mark_pending(None)
    return True
