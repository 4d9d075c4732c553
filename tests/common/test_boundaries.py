"""Import boundaries between the packages, checked on the source (no imports are executed).

The rules (README, "Repository"): the node never imports the console or the installer; the OTA client
never imports the update server; nothing that runs on a host or serves a fleet imports the image build
code (``qx_build``); ``qx_common`` imports none of the product packages; and no package reaches into
another's private names (``from pkg._x import`` / ``pkg._x``). A new import that crosses a boundary
fails here, naming the file and line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "qx_common": REPO / "common/qx_common",
    "qx_node": REPO / "services/qx_node",
    "qx_console": REPO / "console/qx_console",
    "qx_install": REPO / "console/qx_install",
    "qx_update": REPO / "updates/qx_update",
    "qx_update_server": REPO / "update_server/qx_update_server",
    "qx_build": REPO / "image/qx_build",
}
FORBIDDEN: dict[str, set[str]] = {
    "qx_common": {"qx_node", "qx_console", "qx_install", "qx_update", "qx_update_server", "qx_build"},
    "qx_node": {"qx_console", "qx_install", "qx_update_server", "qx_build"},
    "qx_update": {"qx_update_server", "qx_console", "qx_install", "qx_node", "qx_build"},
    "qx_update_server": {"qx_console", "qx_install", "qx_node", "qx_build"},
    "qx_console": {"qx_node", "qx_update_server", "qx_build"},
    "qx_install": {"qx_node", "qx_update_server", "qx_build"},
    "qx_build": {"qx_node", "qx_update_server", "qx_console"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _violations() -> list[str]:
    bad = []
    for pkg, root in PACKAGES.items():
        for f in sorted(root.rglob("*.py")):
            for line, name in _imports(f):
                top = name.split(".")[0]
                where = f"{f.relative_to(REPO)}:{line}"
                if top in FORBIDDEN[pkg]:
                    bad.append(f"{where}: {pkg} must not import {top} ({name})")
                elif top in PACKAGES and top != pkg and any(p.startswith("_") and p != "__future__"
                                                            for p in name.split(".")[1:]):
                    bad.append(f"{where}: {pkg} reaches into a private name of {top} ({name})")
    return bad


def test_no_package_crosses_a_boundary() -> None:
    assert _violations() == []


@pytest.mark.parametrize("pkg, imp", [("qx_node", "qx_console.app"), ("qx_update", "qx_update_server.app"),
                                      ("qx_common", "qx_update.slots")])
def test_the_rule_catches_a_crossing(tmp_path: Path, pkg: str, imp: str) -> None:
    f = tmp_path / "probe.py"
    f.write_text(f"import {imp}\n")
    assert any(top in FORBIDDEN[pkg] for _, n in _imports(f) for top in [n.split(".")[0]])


# Every external command goes through qx_common.run (run() or spawn()): the clean environment, the
# command logged, failures as our errors with stderr's tail. Only that module may import subprocess.
RUNS_COMMANDS = PACKAGES["qx_common"] / "run.py"


def _subprocess_imports(files: list[Path]) -> list[str]:
    return [f"{f.relative_to(REPO) if f.is_relative_to(REPO) else f}:{line}: imports {name}; use qx_common.run"
            for f in files if f != RUNS_COMMANDS
            for line, name in _imports(f) if name.split(".")[0] == "subprocess"]


def test_only_qx_common_run_imports_subprocess() -> None:
    assert _subprocess_imports([f for root in PACKAGES.values() for f in sorted(root.rglob("*.py"))]) == []


def test_the_subprocess_rule_catches_an_import(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import subprocess\n")
    (tmp_path / "b.py").write_text("from subprocess import Popen\n")
    found = _subprocess_imports([tmp_path / "a.py", tmp_path / "b.py", RUNS_COMMANDS])
    assert {m.split(":")[0] for m in found} == {str(tmp_path / "a.py"), str(tmp_path / "b.py")}
