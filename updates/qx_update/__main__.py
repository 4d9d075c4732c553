"""``python -m qx_update`` — the same as the ``qx-update`` command."""

import sys

from qx_update.cli import main

sys.argv[0] = "qx-update"
main()
