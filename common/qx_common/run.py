"""The one way Quantix code runs an external command.

Every call goes through :func:`run`: it builds a clean, predictable environment (C locale, no
inherited Python or pager variables), logs the command at debug level, and turns every failure into
one of our errors — a missing program becomes :class:`~qx_common.errors.EnvironmentError_` naming the
package to install, a non-zero exit becomes :class:`~qx_common.errors.ExternalError` carrying the
tail of stderr. Callers never see ``FileNotFoundError`` or ``CalledProcessError``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from qx_common import log
from qx_common.errors import EnvironmentError_, ExternalError

_log = log.get("run")

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
        tail = "\n".join(err.strip().splitlines()[-5:]) or "(no error output)"
        raise ExternalError(
            f"'{Path(argv[0]).name}' failed with exit code {proc.returncode}: {tail}",
        )
    return result
