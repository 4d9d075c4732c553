"""Logging for Quantix commands: one format, steps highlighted, debug on request."""

from __future__ import annotations

import logging
import os
import sys

_LOG = logging.getLogger("quantix")


def setup(debug: bool = False) -> None:
    """Configure the root ``quantix`` logger once per process."""
    level = logging.DEBUG if debug or os.environ.get("QX_DEBUG") else logging.INFO
    if not _LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _LOG.addHandler(handler)
    _LOG.setLevel(level)
    _LOG.propagate = False


def get(name: str) -> logging.Logger:
    """A child logger of ``quantix`` (``get("node.api")`` → ``quantix.node.api``)."""
    return _LOG.getChild(name)


def step(message: str) -> None:
    """Announce a step of a long operation (shown at info level with a marker)."""
    _LOG.info("‣ %s", message)
