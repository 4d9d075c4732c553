"""The update server's test-only crash hook (atomic writes are :mod:`qx_common.fs`'s, as everywhere).

``crashpoint(step)`` kills the process with SIGKILL when ``QX_SERVER_TEST_CRASH_AT`` names ``step``.
It exists only so tests can prove that a crash at each exact step of a publish leaves a repository
that verifies; nothing sets that variable in production.
"""

from __future__ import annotations

import os
import signal

CRASH_ENV = "QX_SERVER_TEST_CRASH_AT"


def crashpoint(step: str) -> None:
    """Test hook: die here, at once and without cleanup, if the environment asks for it."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
