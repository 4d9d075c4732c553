"""qx_common.run.spawn (and run's failure report): real child processes, no mocks.

What a streaming caller relies on: lines arrive while the child runs; a child that floods stderr does
not block us; a failure (exit code or signal) is reported once, with the tail of stderr; an exception
in the caller's block kills the child and is what the caller sees; the child gets the clean environment.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from qx_common.errors import EnvironmentError_, ExternalError
from qx_common.run import PIPE, run, spawn


def _gone(pid: int) -> bool:
    """The child was reaped (spawn waits for it): no process with that id is ours any more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # The id may have been reused by an unrelated process; ours would be a zombie child of this one.
    return not Path(f"/proc/{pid}/stat").exists() or os.getpid() != int(
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_spawn_streams_lines_while_the_child_runs() -> None:
    seen: list[str] = []
    # The child waits for our answer after the first line: only streaming gets past it.
    with spawn(["sh", "-c", 'echo first; read x; echo "got $x"; echo last'], stdin=PIPE, text=True) as p:
        assert p.stdout is not None and p.stdin is not None
        seen.append(p.stdout.readline())
        p.stdin.write("answer\n")
        p.stdin.flush()
        seen.extend(p.stdout)
    assert seen == ["first\n", "got answer\n", "last\n"]
    assert p.returncode == 0


def test_spawn_pipes_binary_stdin_to_a_file(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    out = tmp_path / "copy"
    with out.open("wb") as dst, spawn(["cat"], stdin=PIPE, stdout=dst) as p:
        assert p.stdin is not None
        for i in range(0, len(data), 65536):
            p.stdin.write(data[i:i + 65536])
    assert out.read_bytes() == data


def test_a_child_flooding_stderr_does_not_block_the_stdout_reader() -> None:
    # 1 MiB on stderr before the first stdout byte: with stderr on a pipe nobody reads, the child
    # would block at 64 KiB and we would wait on stdout forever.
    script = "head -c 1048576 /dev/zero | tr '\\0' x >&2; echo >&2; echo tail-of-stderr >&2; echo out"
    with spawn(["sh", "-c", script], text=True) as p:
        assert p.stdout is not None
        assert p.stdout.read() == "out\n"
    assert p.stderr_text().endswith("tail-of-stderr\n")


def test_failure_is_reported_with_the_stderr_tail() -> None:
    script = "for i in 1 2 3 4 5 6 7; do echo problem $i >&2; done; exit 3"
    with pytest.raises(ExternalError) as ei:
        with spawn(["sh", "-c", script]) as p:
            assert p.stdout is not None
            p.stdout.read()
    msg = str(ei.value)
    assert msg.startswith("'sh' failed with exit code 3: ")
    assert "problem 3" in msg and "problem 7" in msg and "problem 2" not in msg  # the last five lines


def test_run_and_spawn_report_a_failure_alike() -> None:
    script = "echo broken >&2; exit 9"
    with pytest.raises(ExternalError) as by_run:
        run(["sh", "-c", script])
    with pytest.raises(ExternalError) as by_spawn:
        with spawn(["sh", "-c", script]):
            pass
    assert str(by_run.value) == str(by_spawn.value) == "'sh' failed with exit code 9: broken"


def test_a_killed_child_is_reported_by_its_signal() -> None:
    with pytest.raises(ExternalError, match=r"'sh' was killed by signal SIGKILL: dying"):
        with spawn(["sh", "-c", "echo dying >&2; kill -9 $$"]) as p:
            assert p.stdout is not None
            p.stdout.read()


def test_without_check_the_caller_reads_the_result_after_the_block() -> None:
    with spawn(["sh", "-c", "echo '{\"error\": \"x\"}'; echo why >&2; exit 4"], check=False, text=True) as p:
        assert p.stdout is not None
        out = p.stdout.read()
    assert out == '{"error": "x"}\n'
    assert p.returncode == 4
    assert p.stderr_text() == "why\n"
    assert p.failure() == "'sh' failed with exit code 4: why"


def test_an_exception_in_the_block_kills_the_child_and_goes_on_unchanged() -> None:
    with pytest.raises(ValueError, match="caller gave up"):
        with spawn(["sleep", "600"]) as p:
            pid = p.pid
            raise ValueError("caller gave up")
    assert p.returncode is not None and p.returncode < 0  # killed, and waited for
    assert _gone(pid)


def test_a_broken_pipe_to_a_failed_child_is_that_childs_failure() -> None:
    with pytest.raises(ExternalError, match=r"'sh' failed with exit code 5: not reading") as ei:
        with spawn(["sh", "-c", "echo not reading >&2; exit 5"], stdin=PIPE, stdout=None) as p:
            assert p.stdin is not None
            while True:  # the child exits without reading: a write fails with EPIPE soon
                p.stdin.write(b"x" * 65536)
    assert isinstance(ei.value.__cause__, BrokenPipeError)


def test_a_child_that_does_not_exit_after_its_pipes_close_is_killed() -> None:
    with pytest.raises(ExternalError, match="did not exit within 0.5 s"):
        with spawn(["sleep", "600"], stdin=PIPE, wait_timeout=0.5) as p:
            pid = p.pid
    assert _gone(pid)


def test_spawn_gives_the_child_the_clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    monkeypatch.setenv("LC_ALL", "de_DE.UTF-8")
    monkeypatch.setenv("PAGER", "less")
    with spawn(["env"], env={"QX_EXTRA": "1"}, text=True) as p:
        assert p.stdout is not None
        env = dict(line.rstrip("\n").split("=", 1) for line in p.stdout)
    assert "PYTHONPATH" not in env
    assert env["LC_ALL"] == "C.UTF-8" and env["PAGER"] == "cat" and env["QX_EXTRA"] == "1"
    # The same variables run() gives a child: one environment for both.
    assert set(env) == {line.split("=", 1)[0] for line in run(["env"], env={"QX_EXTRA": "1"}).stdout.splitlines()}


def test_a_missing_program_names_the_package_to_install() -> None:
    with pytest.raises(EnvironmentError_) as ei:
        with spawn(["qx-no-such-program"]):
            pass
    assert "'qx-no-such-program' was not found" in str(ei.value)
    assert ei.value.hint == "install it: apt-get install qx-no-such-program"


def test_spawn_logs_the_command_at_debug_level() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger("quantix.run")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with spawn(["sh", "-c", "exit 0", "it's"]):
            pass
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert [r.getMessage() for r in records] == ["+ sh -c 'exit 0' 'it'\"'\"'s'"]
