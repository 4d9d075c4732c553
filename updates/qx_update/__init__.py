"""qx-update: the Quantix OS over-the-air update client (TUF-verified, A/B slots, boot counting).

The public surface other packages may use is what this module exports (``__all__``):

* the release contract (:mod:`qx_update.contract`): what a release carries in signed metadata, shared
  with the update server, which imports it to build what it signs.
"""

from qx_update.contract import (ARTIFACTS, CHANNELS, IMAGE_ID, ContractError, ReleaseTarget, Rollout,
                                artifact_name, target_path)

__all__ = ["ARTIFACTS", "CHANNELS", "IMAGE_ID", "ContractError", "ReleaseTarget", "Rollout", "artifact_name",
           "target_path"]
