"""image/scripts/install-quantix run for real (the host's Python, as a subprocess) on a fake venv in tmp_path,
with small wheels built here: what it installs (modes whatever the caller's umask, launchers, links,
checked-hash byte code, a RECORD of everything), what a replacement removes (file by file from the old
RECORD, stale byte code, emptied directories, old launchers and links), that the result is a function of
the wheel (reinstalling gives the same bytes), and the inputs it refuses."""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.util
import io
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from qx_build.paths import REPO

SCRIPT = REPO / "image/scripts/install-quantix"
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"
TAG = sys.implementation.cache_tag  # cpython-311: the interpreter that runs the script compiles

V1_FILES = {
    "qx_demo/__init__.py": (
        "from pathlib import Path\n"
        "import sys\n\n"
        "from qx_demo.sub.mod import greet\n\n\n"
        "def main() -> int:\n"
        "    data = Path(__file__).with_name('data.txt').read_text().strip()\n"
        "    print(greet(Path(sys.argv[0]).name), data, ' '.join(sys.argv[1:]))\n"
        "    return 0\n"
    ),
    "qx_demo/sub/mod.py": "def greet(name: str) -> str:\n    return f'hello from {name}:'\n",
    "qx_demo/data.txt": "data v1\n",
}
V2_FILES = {
    "qx_demo/__init__.py": "def main() -> int:\n    print('v2')\n    return 0\n",
    "qx_demo/new.py": "VALUE = 2\n",
    "qx_demo/data.txt": "data v2\n",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel(directory: Path, *, version: str = "0.1.0", files: dict[str, str] | None = None,
           scripts: dict[str, str] | None = None, purelib: bool = True,
           extra: dict[str, str] | None = None) -> Path:
    """A wheel as setuptools makes ours: packages at the root, a dist-info with its own RECORD."""
    files = V1_FILES if files is None else files
    scripts = {"qx-demo": "qx_demo:main"} if scripts is None else scripts
    info = f"quantix_os-{version}.dist-info"
    members = dict(files)
    members.update(extra or {})
    members[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: quantix-os\nVersion: {version}\n"
    members[f"{info}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: test\n"
                                f"Root-Is-Purelib: {'true' if purelib else 'false'}\nTag: py3-none-any\n")
    members[f"{info}/entry_points.txt"] = "[console_scripts]\n" + "".join(
        f"{name} = {target}\n" for name, target in scripts.items())
    members[f"{info}/top_level.txt"] = "qx_demo\n"
    record = "".join(f"{n},sha256={_b64(t.encode())},{len(t.encode())}\n" for n, t in sorted(members.items()))
    members[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    path = directory / f"quantix_os-{version}-py3-none-any.whl"
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """bin/python (the host's interpreter), a pyvenv.cfg so that it runs as this venv's, site-packages."""
    v = tmp_path / "venv"
    (v / "bin").mkdir(parents=True)
    (v / "bin" / "python").symlink_to(sys.executable)
    (v / "pyvenv.cfg").write_text(f"home = {Path(sys._base_executable).parent}\n"
                                  "include-system-site-packages = false\n")
    (v / "lib" / PYVER / "site-packages").mkdir(parents=True)
    return v


def _site(venv: Path) -> Path:
    return venv / "lib" / PYVER / "site-packages"


def _run(*args: Path | str, umask: int = 0o077) -> subprocess.CompletedProcess[str]:
    """As postinst.chroot runs it (``python -B install-quantix ...``), under a restrictive umask."""
    return subprocess.run([sys.executable, "-B", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          umask=umask, env={"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"}, timeout=60)


def _install(venv: Path, wheel: Path, links: Path) -> None:
    res = _run(venv, wheel, links)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""


def _snapshot(*roots: Path) -> dict[str, tuple[str, int, bytes | str | None]]:
    """Every path under ``roots``: its kind, mode and contents (files) or target (links)."""
    out: dict[str, tuple[str, int, bytes | str | None]] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(dirpath) / name
                st = p.lstat()
                mode = stat.S_IMODE(st.st_mode)
                key = str(p)
                if stat.S_ISLNK(st.st_mode):
                    out[key] = ("link", mode, os.readlink(p))
                elif stat.S_ISDIR(st.st_mode):
                    out[key] = ("dir", mode, None)
                else:
                    out[key] = ("file", mode, p.read_bytes())
    return out


def _record(site: Path, info: str = "quantix_os-0.1.0.dist-info") -> list[list[str]]:
    return list(csv.reader(io.StringIO((site / info / "RECORD").read_text())))


def _launcher(venv: Path, module: str = "qx_demo", func: str = "main") -> str:
    return (f"#!{venv}/bin/python\n"
            "# -*- coding: utf-8 -*-\n"
            "import re\n"
            "import sys\n"
            f"from {module} import {func}\n"
            "if __name__ == '__main__':\n"
            "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
            f"    sys.exit({func}())\n")


def _installed_files(venv: Path) -> set[str]:
    """Every file the install made, relative to site-packages as RECORD names them."""
    site = _site(venv)
    found = {os.path.relpath(Path(d) / f, site) for d, _, fs in os.walk(site) for f in fs}
    found |= {os.path.relpath(p, site) for p in (venv / "bin").iterdir() if p.name != "python"}
    return found


# --- install -------------------------------------------------------------------------------------------

def test_install_puts_files_launcher_and_link_in_place_with_fixed_modes(tmp_path: Path, venv: Path) -> None:
    links = tmp_path / "usr-bin"  # made by the script
    _install(venv, _wheel(tmp_path / "dist"), links)
    site = _site(venv)
    for rel, text in V1_FILES.items():
        assert (site / rel).read_text() == text
    info = site / "quantix_os-0.1.0.dist-info"
    assert sorted(p.name for p in info.iterdir()) == ["INSTALLER", "METADATA", "RECORD", "WHEEL",
                                                      "entry_points.txt", "top_level.txt"]
    assert (info / "INSTALLER").read_text() == "install-quantix\n"
    # The caller's umask was 077: every mode is the script's own choice.
    for root in (site / "qx_demo", info):
        for dirpath, dirs, files in os.walk(root):
            assert stat.S_IMODE(os.stat(dirpath).st_mode) == 0o755, dirpath
            for f in files:
                assert stat.S_IMODE((Path(dirpath) / f).stat().st_mode) == 0o644, f"{dirpath}/{f}"
    launcher = venv / "bin" / "qx-demo"
    assert launcher.read_text() == _launcher(venv)
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    assert stat.S_IMODE(links.stat().st_mode) == 0o755
    link = links / "qx-demo"
    assert link.is_symlink() and os.readlink(link) == str(launcher)
    assert sorted(p.name for p in links.iterdir()) == ["qx-demo"]
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".qx-tmp")]
    assert leftovers == []


def test_every_module_has_a_checked_hash_pyc(tmp_path: Path, venv: Path) -> None:
    _install(venv, _wheel(tmp_path / "dist"), tmp_path / "usr-bin")
    site = _site(venv)
    sources = sorted(site.rglob("*.py"))
    assert [p.relative_to(site).as_posix() for p in sources] == ["qx_demo/__init__.py", "qx_demo/sub/mod.py"]
    for src in sources:
        pyc = Path(importlib.util.cache_from_source(str(src)))
        assert pyc.parent.name == "__pycache__" and pyc.name == f"{src.stem}.{TAG}.pyc"
        header = pyc.read_bytes()[:16]
        assert header[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(header[4:8], "little") == 0b11, pyc  # hash-based, checked against the source
        assert header[8:16] == importlib.util.source_hash(src.read_bytes())
        assert stat.S_IMODE(pyc.stat().st_mode) == 0o644
        assert stat.S_IMODE(pyc.parent.stat().st_mode) == 0o755
        assert sorted(p.name for p in pyc.parent.iterdir()) == [pyc.name]  # no optimised variants


def test_record_lists_every_installed_file_with_its_hash(tmp_path: Path, venv: Path) -> None:
    wheel = _wheel(tmp_path / "dist")
    _install(venv, wheel, tmp_path / "usr-bin")
    site = _site(venv)
    rows = _record(site)
    info_record = "quantix_os-0.1.0.dist-info/RECORD"
    assert rows[-1] == [info_record, "", ""]
    assert [r[0] for r in rows[:-1]] == sorted(r[0] for r in rows[:-1])
    assert {r[0] for r in rows} == _installed_files(venv)
    for rel, digest, size in rows[:-1]:
        data = (site / rel).read_bytes()
        assert digest == f"sha256={_b64(data)}" and int(size) == len(data), rel
    names = {r[0] for r in rows}
    assert "../../../bin/qx-demo" in names
    assert {f"qx_demo/__pycache__/__init__.{TAG}.pyc", f"qx_demo/sub/__pycache__/mod.{TAG}.pyc",
            "quantix_os-0.1.0.dist-info/INSTALLER"} <= names
    with zipfile.ZipFile(wheel) as zf:
        assert (site / info_record).read_bytes() != zf.read(info_record)  # regenerated, not copied


def test_the_linked_command_runs(tmp_path: Path, venv: Path) -> None:
    links = tmp_path / "usr-bin"
    _install(venv, _wheel(tmp_path / "dist"), links)
    res = subprocess.run([str(links / "qx-demo"), "a", "b"], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"]})
    assert res.returncode == 0, res.stderr
    assert res.stdout == "hello from qx-demo: data v1 a b\n"


# --- replace, reinstall --------------------------------------------------------------------------------

def test_replace_removes_the_old_copy_file_by_file(tmp_path: Path, venv: Path) -> None:
    links = tmp_path / "usr-bin"
    _install(venv, _wheel(tmp_path / "dist1"), links)
    site = _site(venv)
    # Byte code someone else made (python -O, -OO): not in RECORD, removed with its module all the same.
    stale = [Path(importlib.util.cache_from_source(str(site / "qx_demo/sub/mod.py"), optimization=1)),
             Path(importlib.util.cache_from_source(str(site / "qx_demo/__init__.py"), optimization=2))]
    for p in stale:
        p.write_bytes(b"stale")
    (links / "unrelated").write_text("kept\n")

    _install(venv, _wheel(tmp_path / "dist2", version="0.2.0", files=V2_FILES,
                          scripts={"qx-hello": "qx_demo:main"}), links)
    assert not (site / "quantix_os-0.1.0.dist-info").exists()
    assert not (site / "qx_demo/sub").exists()  # the module, its pyc, __pycache__ and the emptied dir
    assert not any(p.exists() for p in stale)
    assert not (venv / "bin/qx-demo").exists() and not (links / "qx-demo").is_symlink()
    assert (venv / "bin/qx-hello").read_text() == _launcher(venv)
    assert os.readlink(links / "qx-hello") == str(venv / "bin/qx-hello")
    assert sorted(p.name for p in links.iterdir()) == ["qx-hello", "unrelated"]
    assert sorted(p.name for p in (site / "qx_demo/__pycache__").iterdir()) == [f"__init__.{TAG}.pyc",
                                                                               f"new.{TAG}.pyc"]
    for rel, text in V2_FILES.items():
        assert (site / rel).read_text() == text
    # Nothing but the new copy is left: every file there is in the new RECORD.
    assert {r[0] for r in _record(site, "quantix_os-0.2.0.dist-info")} == _installed_files(venv)
    res = subprocess.run([str(links / "qx-hello")], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"]})
    assert (res.returncode, res.stdout) == (0, "v2\n"), res.stderr


def test_reinstall_gives_the_same_tree(tmp_path: Path, venv: Path) -> None:
    links = tmp_path / "usr-bin"
    wheel1 = _wheel(tmp_path / "dist1")
    _install(venv, wheel1, links)
    first = _snapshot(venv, links)
    _install(venv, wheel1, links)  # the same wheel again: idempotent
    assert _snapshot(venv, links) == first
    _install(venv, _wheel(tmp_path / "dist2", version="0.2.0", files=V2_FILES,
                          scripts={"qx-hello": "qx_demo:main"}), links)
    assert _snapshot(venv, links) != first
    _install(venv, wheel1, links)  # back to the first: byte for byte the first install
    assert _snapshot(venv, links) == first


# --- refusals ------------------------------------------------------------------------------------------

def _refused(res: subprocess.CompletedProcess[str], message: str) -> None:
    assert res.returncode != 0, res.stdout
    assert res.stderr.startswith("install-quantix: ") and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("case", ["args", "not-a-venv", "no-wheel"])
def test_bad_arguments_are_refused_before_anything_changes(tmp_path: Path, venv: Path, case: str) -> None:
    links = tmp_path / "usr-bin"
    wheel = _wheel(tmp_path / "dist")
    _install(venv, wheel, links)
    before = _snapshot(tmp_path)
    if case == "args":
        res, message = _run(venv, wheel), "usage: install-quantix VENV WHEEL LINK_DIR"
    elif case == "not-a-venv":
        (venv / "bin/python").rename(venv / "bin/python.off")
        before = _snapshot(tmp_path)
        res, message = _run(venv, wheel, links), f"{venv}: not a venv (no bin/python)"
    else:
        res, message = _run(venv, tmp_path / "missing.whl", links), f"{tmp_path / 'missing.whl'}: no such wheel"
    _refused(res, message)
    assert _snapshot(tmp_path) == before


def _bad_wheel(directory: Path, kind: str) -> Path:
    """A wheel install-quantix must refuse, of the given kind."""
    if kind == "data":
        return _wheel(directory, extra={"quantix_os-0.1.0.data/scripts/qx-x": "#!/bin/sh\n"})
    if kind == "platlib":
        return _wheel(directory, purelib=False)
    if kind == "two-dist-infos":
        return _wheel(directory, extra={"other-1.0.dist-info/METADATA": "Name: other\n"})
    if kind == "escape":
        return _wheel(directory, extra={"../../../bin/qx-evil": "#!/bin/sh\n"})
    if kind == "bad-script":
        return _wheel(directory, scripts={"qx-demo": "qx_demo:main", "qx-x": "qx_demo"})
    path = directory / "quantix_os-0.1.0-py3-none-any.whl"
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "not-a-zip":
        path.write_bytes(b"not a zip file")
    else:  # no WHEEL file
        assert kind == "no-WHEEL"
        with zipfile.ZipFile(_wheel(directory / "src")) as src, zipfile.ZipFile(path, "w") as zf:
            for name in src.namelist():
                if not name.endswith("/WHEEL"):
                    zf.writestr(name, src.read(name))
    return path


BAD_WHEELS = {
    "data": "has a .data directory, which this installer does not handle",
    "platlib": "not a pure-Python wheel",
    "no-WHEEL": "not a pure-Python wheel",
    "not-a-zip": "not a readable wheel",
    "two-dist-infos": "expected one .dist-info directory, found 2",
    "escape": "a file would land outside site-packages (../../../bin/qx-evil)",
    "bad-script": "console script 'qx-x' = 'qx_demo' is not 'name = module:function'",
}


@pytest.mark.parametrize("installed", [False, True], ids=["empty-venv", "installed-venv"])
@pytest.mark.parametrize("kind", sorted(BAD_WHEELS))
def test_a_wheel_it_cannot_install_is_refused_before_anything_changes(tmp_path: Path, venv: Path, kind: str,
                                                                      installed: bool) -> None:
    """Checked before the installed copy is removed: a refused wheel leaves the old copy whole."""
    links = tmp_path / "usr-bin"
    if installed:
        _install(venv, _wheel(tmp_path / "dist1"), links)
    before = _snapshot(venv, links)
    bad = _bad_wheel(tmp_path / "dist2", kind)
    _refused(_run(venv, bad, links), f"{bad}: {BAD_WHEELS[kind]}")
    assert _snapshot(venv, links) == before
    assert links.exists() == installed


def test_an_installed_copy_without_record_is_refused(tmp_path: Path, venv: Path) -> None:
    links = tmp_path / "usr-bin"
    _install(venv, _wheel(tmp_path / "dist1"), links)
    info = _site(venv) / "quantix_os-0.1.0.dist-info"
    (info / "RECORD").unlink()
    before = _snapshot(venv, links)
    res = _run(venv, _wheel(tmp_path / "dist2", version="0.2.0", files=V2_FILES), links)
    _refused(res, f"{info}: no RECORD, so the old copy cannot be removed file by file")
    assert _snapshot(venv, links) == before


def test_relative_paths_are_refused(tmp_path: Path, venv: Path) -> None:
    """The launchers' shebang and the links name VENV: a relative one would make them dangle."""
    wheel = _wheel(tmp_path / "dist")
    res = subprocess.run([sys.executable, "-B", str(SCRIPT), "venv", str(wheel), "usr-bin"], capture_output=True,
                         text=True, cwd=venv.parent, timeout=60)
    _refused(res, "must be absolute")


def test_a_wheel_of_another_distribution_is_refused(tmp_path: Path, venv: Path) -> None:
    """Its files could never be removed again: replacement looks only for quantix_os's RECORD."""
    wheel = _wheel(tmp_path / "dist")
    other = tmp_path / "other" / "other-1.0-py3-none-any.whl"
    other.parent.mkdir()
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(other, "w") as dst:
        for name in src.namelist():
            dst.writestr(name.replace("quantix_os-0.1.0.dist-info", "other-1.0.dist-info"), src.read(name))
    _refused(_run(venv, other, tmp_path / "usr-bin"), "is not quantix_os's")


def test_a_command_not_named_qx_loses_its_link_on_replacement(tmp_path: Path, venv: Path) -> None:
    links = tmp_path / "usr-bin"
    _install(venv, _wheel(tmp_path / "dist1", scripts={"demo": "qx_demo:main"}), links)
    assert (links / "demo").is_symlink()
    _install(venv, _wheel(tmp_path / "dist2", scripts={"qx-hello": "qx_demo:main"}), links)
    assert not (links / "demo").is_symlink() and (links / "qx-hello").is_symlink()
