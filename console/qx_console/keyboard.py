"""Console keyboard layouts: the one list the installer, the console and the answer file share.

A layout name is what the operator picks (``us``, ``de``, ``fr``, ``uk``, ...); :data:`LAYOUTS` maps it to
a description shown on screen. :func:`check_layout` is the validation rule every input goes through.
"""

from __future__ import annotations

from qx_console.hostconfig import FieldError

DEFAULT_LAYOUT = "us"

# name -> what the operator sees. Names are kbd keymap names (loadkeys NAME, KEYMAP=NAME in vconsole.conf).
LAYOUTS: dict[str, str] = {
    "us": "English (US)",
    "uk": "English (UK)",
    "de": "German",
    "fr": "French",
}


def check_layout(value: object, fld: str = "install.keyboard") -> FieldError | None:
    if not isinstance(value, str) or value not in LAYOUTS:
        return FieldError(fld, f"'{value}' is not a known keyboard layout",
                          "use one of: " + ", ".join(LAYOUTS))
    return None
