"""What every host concern shares: the root prefix, the network namespace, the command runner and the
persistent configuration store.

Invariant: nothing here changes the host; the concern modules do, each through :meth:`HostContext.cmd`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qx_common import hostpaths, log
from qx_common.errors import QxError
from qx_common.run import CompletedProcess, run

from qx_console.hostconfig import HostConfig, Provenance
from qx_console.store import ConfigStore

_log = log.get("console.host")


@dataclass
class HostContext:
    root: Path = Path("/")
    netns: str | None = None  # network commands run inside this namespace (tests)
    store: ConfigStore = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.store = ConfigStore(self.root)

    def path(self, rel: str | Path) -> Path:
        """``rel`` (relative, or absolute on the host) under the root prefix."""
        return self.root / Path(rel).relative_to("/") if Path(rel).is_absolute() else self.root / rel

    def read(self, rel: str | Path, default: str = "") -> str:
        """A small text file under the root, or ``default`` when it cannot be read (status readings:
        a missing /proc entry is shown as unknown, never an error)."""
        try:
            return self.path(rel).read_text()
        except (OSError, UnicodeDecodeError):
            return default

    def cmd(self, argv: list[str], *, check: bool = True, timeout: float = 15, net: bool = False) -> CompletedProcess[str]:
        """Run ``argv`` through :func:`qx_common.run.run`; ``net=True`` runs it in the namespace, if any."""
        if net and self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        return run(argv, check=check, timeout=timeout)

    @property
    def lockdown_file(self) -> Path:
        return self.path(hostpaths.lockdown_file())

    def lockdown_on(self) -> bool:
        """Lockdown mode is on while its file exists (one definition: qx_common.hostpaths)."""
        return self.lockdown_file.exists()

    def load_config(self) -> tuple[HostConfig, Provenance]:
        """The persisted configuration; an unreadable one shows as the defaults (and is logged), so the
        console still starts and can write a good one."""
        try:
            cfg = self.store.load()
        except (QxError, ValueError) as e:
            _log.warning("stored configuration unreadable (%s); showing defaults", e)
            cfg = HostConfig()
        return cfg, self.store.provenance()
