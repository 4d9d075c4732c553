"""qx_common.run against hostile children: real processes, no mocks.

Bytes that are not UTF-8 on stdout or stderr (text mode), a child that closes stdout but keeps running,
children ending every way there is, many times over — and afterwards no zombie child and no leaked
file descriptor in this process (read from /proc).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from qx_common.errors import ExternalError
from qx_common.run import PIPE, run, spawn

NOT_UTF8 = r"printf 'ok \377\376 end\n'"


def _children() -> list[tuple[int, str]]:
    """(pid, state) of every process whose parent is this one."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == os.getpid():
            out.append((int(stat.parent.name), fields[0]))
    return out


def test_run_reads_output_that_is_not_utf8() -> None:
    assert run(["sh", "-c", NOT_UTF8]).stdout == "ok \ufffd\ufffd end\n"
    with pytest.raises(ExternalError) as e:
        run(["sh", "-c", f"{NOT_UTF8} >&2; exit 3"])
    assert "exit code 3" in e.value.message and "ok \ufffd\ufffd end" in e.value.message


def test_spawn_text_mode_reads_output_that_is_not_utf8() -> None:
    with spawn(["sh", "-c", NOT_UTF8], text=True) as p:
        assert p.stdout is not None
        assert list(p.stdout) == ["ok \ufffd\ufffd end\n"]


def test_a_child_that_closes_stdout_but_keeps_running_is_killed_and_reported() -> None:
    t0 = time.monotonic()
    with pytest.raises(ExternalError) as e:
        with spawn(["sh", "-c", "exec >&-; sleep 60"], wait_timeout=0.5) as p:
            assert p.stdout is not None and p.stdout.read() == b""  # EOF at once, the child still runs
    assert time.monotonic() - t0 < 10 and "did not exit within 0.5 s" in e.value.message
    assert p.returncode == -signal.SIGKILL


def _one_of_each(i: int) -> None:
    kind = i % 6
    if kind == 0:  # streamed to the end
        with spawn(["sh", "-c", "echo out; echo err >&2"]) as p:
            assert p.stdout is not None and p.stdout.read() == b"out\n"
    elif kind == 1:  # fails
        with pytest.raises(ExternalError):
            with spawn(["sh", "-c", "exit 4"]):
                pass
    elif kind == 2:  # the caller's exception mid-stream
        with pytest.raises(KeyError):
            with spawn(["sh", "-c", "yes"]) as p:
                assert p.stdout is not None
                p.stdout.read(10)
                raise KeyError("caller")
    elif kind == 3:  # killed by a signal
        with pytest.raises(ExternalError) as e:
            with spawn(["sh", "-c", "kill -TERM $$"]):
                pass
        assert "SIGTERM" in e.value.message
    elif kind == 4:  # we write to a child that is gone
        with pytest.raises(ExternalError):
            with spawn(["sh", "-c", "exit 5"], stdin=PIPE, stdout=None) as p:
                assert p.stdin is not None
                for _ in range(1000):
                    p.stdin.write(b"x" * 65536)
    else:  # does not exit after its pipes close
        with pytest.raises(ExternalError):
            with spawn(["sh", "-c", "trap '' TERM; exec >&-; sleep 60"], wait_timeout=0.1):
                pass


def test_many_calls_leave_no_zombie_and_no_open_descriptor() -> None:
    fds = sorted(os.listdir("/proc/self/fd"))
    for i in range(60):
        _one_of_each(i)
        run(["true"])
    assert [c for c in _children() if c[1] == "Z"] == []
    assert _children() == []  # every child was waited for, none left running
    assert sorted(os.listdir("/proc/self/fd")) == fds
