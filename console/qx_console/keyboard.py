"""Console keyboard layouts: the one list the installer, the console and the answer file share.

A layout name is what the operator picks (``us``, ``de``, ``fr``, ``uk``, ...); :data:`LAYOUTS` maps it to
a description shown on screen. :func:`check_layout` is the validation rule every input goes through.

Two places hold a layout:

* the running console: :func:`apply_layout` loads the keymap with ``loadkeys`` (kbd) at once, so the
  operator types the root password with the layout they chose;
* the installed host: :func:`write_layout` writes ``KEYMAP=<name>`` to ``vconsole.conf`` on the data
  partition (``<root>/var/lib/quantix/config/vconsole.conf``; the image's ``/etc/vconsole.conf`` points
  there, so systemd-vconsole-setup applies it at every boot). :func:`read_layout` reads it back.
"""

from __future__ import annotations

from pathlib import Path

from qx_common import log
from qx_common.errors import QxError, UserError
from qx_common.run import run
from qx_console.hostconfig import FieldError
from qx_console.store import CONFIG_DIR, atomic_write

_log = log.get("console.keyboard")

DEFAULT_LAYOUT = "us"

# name -> what the operator sees. Names are kbd keymap names (loadkeys NAME, KEYMAP=NAME in vconsole.conf).
LAYOUTS: dict[str, str] = {
    "us": "English (US)",
    "uk": "English (UK)",
    "de": "German",
    "fr": "French",
}

# Relative to a root directory; /etc/vconsole.conf on the image is a link to it.
VCONSOLE_CONF = Path(CONFIG_DIR) / "vconsole.conf"


def check_layout(value: object, fld: str = "install.keyboard") -> FieldError | None:
    if not isinstance(value, str) or value not in LAYOUTS:
        return FieldError(fld, f"'{value}' is not a known keyboard layout",
                          "use one of: " + ", ".join(LAYOUTS))
    return None


def _checked(name: str) -> str:
    if (err := check_layout(name)):
        raise UserError(str(err), hint=err.hint)
    return name


def apply_layout(name: str) -> str | None:
    """Load keymap ``name`` on the running console; ``None`` when done, else why not (shown, not fatal).

    Best effort by design: on a serial line, in a terminal emulator or without kbd installed there is no
    console keymap to set, and the installer must go on regardless (the layout is still written to the
    installed host). An unknown name is the caller's bug and raises :class:`UserError`.
    """
    _checked(name)
    try:
        run(["loadkeys", name], timeout=10)
    except QxError as e:
        _log.warning("keyboard layout %s not applied: %s", name, e)
        return e.message
    return None


def write_layout(root: Path, name: str) -> Path:
    """Persist ``name`` for the host under ``root`` (atomically); returns the file written."""
    _checked(name)
    path = Path(root) / VCONSOLE_CONF
    atomic_write(path, f"KEYMAP={name}\n")
    return path


def read_layout(root: Path) -> str:
    """The layout stored under ``root``; :data:`DEFAULT_LAYOUT` when none (or an unknown one) is stored."""
    try:
        text = (Path(root) / VCONSOLE_CONF).read_text()
    except OSError:
        return DEFAULT_LAYOUT
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "KEYMAP":
            value = value.strip().strip('"').strip("'")
            return value if value in LAYOUTS else DEFAULT_LAYOUT
    return DEFAULT_LAYOUT
