"""``python -m qx_update`` — the same as the ``qx-update`` command."""

from qx_update.cli import main

main()
