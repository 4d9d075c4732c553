"""The one way Quantix code runs an external command: :func:`run`, or :func:`spawn` to stream.

Both build a clean, predictable environment (C locale, no inherited Python or pager variables), log
the command at debug level, and turn every failure into one of our errors — a missing program becomes
:class:`~qx_common.errors.EnvironmentError_` naming the package to install, a non-zero exit (or a
signal) becomes :class:`~qx_common.errors.ExternalError` carrying the tail of stderr. Callers never see
``FileNotFoundError`` or ``CalledProcessError``. No other module imports :mod:`subprocess`
(``tests/common/test_boundaries.py`` checks it); :data:`CompletedProcess` is re-exported for type hints.

* :func:`run` — the command runs to completion; its output is captured (or goes to the terminal).
* :func:`spawn` — a context manager for a command whose stdin/stdout the caller streams while it runs.
  Its stderr goes to an unnamed temporary file, never a pipe: a child that writes much to stderr
  cannot block while the caller waits on stdout (the classic two-pipe deadlock). Leaving the block
  closes our ends of the pipes and waits for the child; leaving it by an exception kills the child
  first, and that exception — not the child's dying — is what the caller sees (one failure, one report).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from qx_common import log
from qx_common.errors import EnvironmentError_, ExternalError

_log = log.get("run")

CompletedProcess = subprocess.CompletedProcess
PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
_STDERR_KEEP = 64 * 1024  # how much of a streamed command's stderr is kept for the error message

# Which Debian package provides a program, for the "install it" hint.
_PROVIDERS: dict[str, str] = {
    "mkosi": "mkosi",
    "sfdisk": "fdisk",
    "losetup": "mount",
    "blkid": "util-linux",
    "xorriso": "xorriso",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "mcopy": "mtools",
    "mdir": "mtools",
    "mmd": "mtools",
    "mdel": "mtools",
    "mtype": "mtools",
    "zstd": "zstd",
    "virsh": "libvirt-clients",
    "ip": "iproute2",
    "networkctl": "systemd",
    "journalctl": "systemd",
    "systemctl": "systemd",
    "bootctl": "systemd-boot",
    "sbsign": "sbsigntool",
    "sbverify": "sbsigntool",
    "virt-fw-vars": "python3-virt-firmware",
    "chroot": "coreutils",
    "fallocate": "util-linux",
    "mkfs.erofs": "erofs-utils",
    "fsck.erofs": "erofs-utils",
    "cpio": "cpio",
}

_KEEP_ENV = (
    "PATH", "HOME", "TERM", "TMPDIR", "SOURCE_DATE_EPOCH", "QX_DEBUG",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
)


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: C.UTF-8 locale, PATH/HOME/TERM kept, nothing else inherited."""
    env = {k: os.environ[k] for k in _KEEP_ENV if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C.UTF-8"
    env["SYSTEMD_PAGER"] = "cat"
    env["PAGER"] = "cat"
    if extra:
        env.update(extra)
    return env


def which(program: str) -> str | None:
    return shutil.which(program, path=clean_env()["PATH"])


def require(program: str) -> str:
    """Return the path of ``program`` or stop with a hint naming the package that provides it."""
    path = which(program)
    if path is None:
        pkg = _PROVIDERS.get(program, program)
        raise EnvironmentError_(
            f"required program '{program}' was not found",
            hint=f"install it: apt-get install {pkg}",
        )
    return path


def run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    capture: bool = True,
    input: bytes | str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` with a clean environment; raise our errors on failure.

    ``capture=False`` lets the command print straight to the terminal (for progress output);
    stdout/stderr of the result are then empty strings.
    """
    argv = [os.fspath(a) for a in cmd]
    if not argv:
        raise ValueError("run() needs a command")
    require(argv[0]) if "/" not in argv[0] else None
    _log.debug("+ %s", shlex.join(argv))
    text_input = input.decode() if isinstance(input, bytes) else input
    try:
        proc = subprocess.run(
            argv,
            input=text_input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            # Not the locale's strict codec: a command may print bytes that are not UTF-8 (a journal
            # entry, a disk label, a file name); they become U+FFFD instead of a UnicodeDecodeError.
            encoding="utf-8",
            errors="replace",
            env=clean_env(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise EnvironmentError_(f"cannot run '{argv[0]}': not found") from e
    except subprocess.TimeoutExpired as e:
        raise ExternalError(f"'{shlex.join(argv)}' did not finish within {timeout} s") from e
    out = proc.stdout or ""
    err = proc.stderr or ""
    result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise ExternalError(_failure(argv, proc.returncode, err))
    return result


def _failure(argv: Sequence[str], returncode: int, stderr: str) -> str:
    """The one-line report of a failed command: its name, how it ended, the last lines of stderr."""
    tail = "\n".join(stderr.strip().splitlines()[-5:]) or "(no error output)"
    if returncode < 0:
        try:
            how = f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"was killed by signal {-returncode}"
    else:
        how = f"failed with exit code {returncode}"
    return f"'{Path(argv[0]).name}' {how}: {tail}"


class Process:
    """A command started by :func:`spawn`: its pipes, its state, and the stderr it wrote so far."""

    def __init__(self, popen: subprocess.Popen[Any], argv: list[str], errfile: IO[bytes]) -> None:
        self._popen = popen
        self.argv = argv
        self._errfile = errfile
        self._stderr_final: str | None = None

    @property
    def stdin(self) -> IO[Any] | None:
        return self._popen.stdin

    @property
    def stdout(self) -> IO[Any] | None:
        return self._popen.stdout

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.returncode

    def poll(self) -> int | None:
        return self._popen.poll()

    def kill(self) -> None:
        self._popen.kill()

    def stderr_text(self) -> str:
        """What the command wrote to stderr (the last 64 KiB), also after the ``with`` block."""
        if self._stderr_final is not None:
            return self._stderr_final
        # pread: the child shares the file's offset, so we must not move it while it may still write.
        fd = self._errfile.fileno()
        size = os.fstat(fd).st_size
        start = max(0, size - _STDERR_KEEP)
        return os.pread(fd, size - start, start).decode(errors="replace")

    def failure(self) -> str:
        """The same one-line report :func:`run` gives for a failed command."""
        return _failure(self.argv, self._popen.returncode or 0, self.stderr_text())

    def _close_pipes(self) -> None:
        for stream in (self._popen.stdin, self._popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a child that already exited: its pipe is broken
                    stream.close()

    def _finish(self) -> None:
        self._stderr_final = self.stderr_text()


@contextlib.contextmanager
def spawn(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = PIPE,
    text: bool = False,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    wait_timeout: float | None = 60,
) -> Iterator[Process]:
    """Start ``cmd`` with a clean environment and hand its pipes to the ``with`` block.

    ``stdin``/``stdout`` are :data:`PIPE` (the caller streams them), an open file, or ``None``
    (inherited). Binary and unbuffered unless ``text``. On a normal exit from the block our pipe ends
    are closed (EOF for the child's stdin), the child is waited for (at most ``wait_timeout`` s, then
    killed) and, with ``check``, a non-zero exit or a signal raises :class:`ExternalError` with the
    stderr tail; without ``check`` the caller reads ``returncode`` and ``stderr_text()`` after the
    block. On an exception the child is killed and the exception goes on unchanged — except a broken
    pipe to a child that failed, which is reported as that child's failure.
    """
    argv = [os.fspath(a) for a in cmd]
    if not argv:
        raise ValueError("spawn() needs a command")
    require(argv[0]) if "/" not in argv[0] else None
    _log.debug("+ %s", shlex.join(argv))
    with tempfile.TemporaryFile(prefix="qx-stderr-") as errfile:
        try:
            # In text mode UTF-8 with U+FFFD for what is not (as run() does): a stray byte in the output
            # must not become a UnicodeDecodeError in the middle of the caller's loop.
            popen = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=errfile, env=clean_env(env),
                                     cwd=cwd, text=text, bufsize=-1 if text else 0,
                                     encoding="utf-8" if text else None, errors="replace" if text else None)
        except FileNotFoundError as e:
            raise EnvironmentError_(f"cannot run '{argv[0]}': not found") from e
        except OSError as e:
            raise EnvironmentError_(f"cannot run '{argv[0]}': {e.strerror}") from e
        proc = Process(popen, argv, errfile)
        try:
            yield proc
        except BrokenPipeError as e:
            # We were writing to a child that is gone: its own failure is the real report.
            proc._close_pipes()
            rc = popen.wait()
            proc._finish()
            if rc != 0:
                raise ExternalError(proc.failure()) from e
            raise
        except BaseException:
            proc._close_pipes()
            if popen.poll() is None:
                popen.kill()  # the caller gave up on it: its output is no longer wanted
            popen.wait()
            proc._finish()
            raise
        proc._close_pipes()
        try:
            rc = popen.wait(timeout=wait_timeout)
        except subprocess.TimeoutExpired as e:
            popen.kill()
            popen.wait()
            proc._finish()
            raise ExternalError(f"'{shlex.join(argv)}' did not exit within {wait_timeout} s "
                                "after its pipes were closed") from e
        proc._finish()
        if check and rc != 0:
            raise ExternalError(proc.failure())
