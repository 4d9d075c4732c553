"""qx-update: the Quantix OS over-the-air update client (TUF-verified, A/B slots, boot counting).

The public surface — what other packages may use — is what this module exports (``__all__``); the
other modules are the client's own. Two parts:

* The release contract (:mod:`qx_update.contract`): what a release carries in signed metadata. The
  update server imports it to build what it signs, so both sides read one definition.
* The typed results and entry points (:mod:`qx_update.api`): ``status(cfg) -> UpdateStatus`` and the
  ``check``/``apply``/``rollback``/``set_channel`` workflows, and the models ``qx-update --json``
  prints (each with ``schema_version``); ``read_boot_entries(FatFiles(partition))`` for the boot
  entries of a disk that is not this host's (the installer). The console runs the ``qx-update`` command (a separate,
  privileged process with its own lock) and reads its output with ``UpdateStatus.from_json`` etc.

Importing this package loads only the contract: the rest loads on first use (PEP 562), and no TUF or
network code before a workflow runs.
"""

from typing import TYPE_CHECKING, Any

from qx_update.contract import (ARTIFACTS, CHANNELS, IMAGE_ID, ContractError, ReleaseTarget, Rollout,
                                artifact_name, target_path)

if TYPE_CHECKING:
    from qx_update.api import (SCHEMA_VERSION, AllowResult, ApplyResult, BlessedResult, BootEntries,
                               ChannelResult, CheckinRecord, CheckinResult, CheckResult, ErrorRecord, ErrorReport,
                               GateResult, LastCheck, Model, PendingUpdate, ProgressEvent, RefusedRelease,
                               ReleaseSummary, RollbackRecord, RollbackResult, SchemaError, SecureBootState,
                               SecureBootStatus, SkippedRelease, SlotStatus, State, Transfer, UpdateStatus, apply, check, load_config, read_apply_line,
                               read_boot_entries, rollback, set_channel, status)
    from qx_update.espfat import FatFiles

__all__ = [
    # the release contract
    "ARTIFACTS", "CHANNELS", "IMAGE_ID", "ContractError", "ReleaseTarget", "Rollout", "artifact_name",
    "target_path",
    # results (what --json prints) and the entry points
    "SCHEMA_VERSION", "AllowResult", "ApplyResult", "BlessedResult", "ChannelResult", "CheckResult",
    "CheckinRecord", "CheckinResult", "ErrorRecord", "ErrorReport", "GateResult", "LastCheck", "Model",
    "PendingUpdate", "ProgressEvent", "RefusedRelease", "ReleaseSummary", "RollbackRecord", "RollbackResult",
    "SchemaError", "SecureBootState", "SecureBootStatus", "SkippedRelease", "SlotStatus", "State", "Transfer", "UpdateStatus", "apply", "check", "load_config",
    "read_apply_line", "rollback", "set_channel", "status",
    # another disk's ESP (the installer): its boot entries, read through mtools
    "BootEntries", "FatFiles", "read_boot_entries",
]

_CONTRACT = {"ARTIFACTS", "CHANNELS", "IMAGE_ID", "ContractError", "ReleaseTarget", "Rollout", "artifact_name",
             "target_path"}


def __getattr__(name: str) -> Any:
    """The results and entry points load on first use: the update server imports only the contract,
    and ~20 frozen dataclasses cost it ~30 ms of start-up (bench/update_status.py)."""
    if name == "FatFiles":
        from qx_update.espfat import FatFiles

        return FatFiles
    if name in __all__ and name not in _CONTRACT:
        from qx_update import api

        return getattr(api, name)
    raise AttributeError(f"module 'qx_update' has no attribute {name!r}")
