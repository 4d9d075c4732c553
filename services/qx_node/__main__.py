"""``python -m qx_node`` is ``qx-node``."""

from qx_node.cli import main

main()
