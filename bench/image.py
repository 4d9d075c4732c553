"""Image benchmarks, each run side by side with a bare baseline in the same run (noisy machines).

    .venv/bin/python bench/image.py build   # cold (release, fast) and warm after a Python change (release,
                                            # fast, fast through mkosi) vs a bare mkosi build (cold, warm x2)
    .venv/bin/python bench/image.py boot [ROUNDS]  # QEMU start → console marker vs bare → login prompt
    .venv/bin/python bench/image.py secureboot [ROUNDS] [stub]  # the same image → the kernel's EFI stub
                                            # (and → healthy node, unless "stub"): enforcing Secure Boot
                                            # firmware (SMM, the release's certificate enrolled) vs the
                                            # plain firmware the e2e tests and make boot use
    .venv/bin/python bench/image.py verity [ROUNDS]  # QEMU start → console ready: dm-verity and Secure
                                            # Boot on, verity only, neither (same image); and the root's
                                            # cold read throughput with and without dm-verity (guest)

The bare baseline is mkosi with the same distribution, release and package list as mkosi.conf, a
bootable disk and nothing of ours (no scripts, trees, repart layout, payload, ISO). Both share the
downloaded-package cache, so "cold" means "no incremental tree cache", not "no downloads".
Results are printed as a markdown table and saved to bench/results/image-<what>.json.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
BARE_DIR = REPO / "build" / ".work" / "bench-bare"
RESULTS = REPO / "bench" / "results"


def _packages() -> list[str]:
    text = (REPO / "mkosi.conf").read_text()
    block = text.split("Packages=", 1)[1]
    pkgs = []
    for line in block.splitlines()[1:]:
        if not line.startswith(" "):
            break
        pkgs.append(line.strip())
    return pkgs


def _bare_config(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "mkosi.conf").write_text(
        "[Distribution]\nDistribution=debian\nRelease=trixie\nArchitecture=x86-64\n"
        f"PackageManagerTrees={REPO / 'image/pkgmngr'}\n\n"
        f"[Output]\nFormat=disk\nOutputDirectory={dest / 'out'}\nCacheDirectory={dest / 'cache'}\n"
        f"PackageCacheDirectory={REPO / 'build/cache/packages'}\n\n"
        "[Content]\nBootable=yes\nBootloader=systemd-boot\nWithDocs=no\nWithRecommends=no\n"
        "RootPassword=bench\nKernelCommandLine=console=ttyS0,115200\n"
        "Packages=\n" + "".join(f"        {p}\n" for p in _packages()) +
        "\n[Host]\nIncremental=yes\n")


def _timed(argv: list[str], cwd: Path) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - t0


def _python_change() -> Path:
    """A one-module change to our Python code (what a developer's loop rebuilds after); removed after."""
    p = REPO / "common" / "qx_common" / "_bench_change.py"
    p.write_text(f"# bench/image.py: a Python change ({time.time_ns()})\n")
    return p


def bench_build() -> dict[str, float]:
    """Cold (no incremental cache) and warm after a one-module Python change, each beside the bare mkosi
    build. The quick rebuild (qx_build.quick) serves a warm build whose last build had the same profile, so
    each profile is primed first; ``--full`` shows the same change through mkosi, as before that path."""
    shutil.rmtree(BARE_DIR, ignore_errors=True)
    _bare_config(BARE_DIR)
    qxb = [str(REPO / ".venv/bin/qx-build"), "image"]
    bare = ["mkosi", "-f", "build"]
    res = {}
    res["bare_cold_s"] = _timed(bare, BARE_DIR)
    shutil.rmtree(REPO / "build/cache/mkosi", ignore_errors=True)  # ours: no incremental cache
    res["quantix_cold_s"] = _timed(qxb, REPO)
    res["bare_warm_s"] = _timed(bare, BARE_DIR)
    change = _python_change()
    try:
        res["quantix_warm_after_python_change_s"] = _timed(qxb, REPO)
        shutil.rmtree(REPO / "build/cache/mkosi", ignore_errors=True)
        res["quantix_fast_cold_s"] = _timed([*qxb, "--fast"], REPO)
        change.write_text(f"# bench/image.py: a second Python change ({time.time_ns()})\n")
        res["quantix_fast_warm_after_python_change_s"] = _timed([*qxb, "--fast"], REPO)
        change.write_text(f"# bench/image.py: a third Python change ({time.time_ns()})\n")
        res["quantix_fast_warm_after_python_change_full_s"] = _timed([*qxb, "--fast", "--full"], REPO)
        res["bare_warm_again_s"] = _timed(bare, BARE_DIR)
    finally:
        change.unlink()
    warm = (res["bare_warm_s"] + res["bare_warm_again_s"]) / 2
    res["ratio_cold_vs_bare"] = res["quantix_cold_s"] / res["bare_cold_s"]
    res["ratio_fast_cold_vs_bare"] = res["quantix_fast_cold_s"] / res["bare_cold_s"]
    res["ratio_warm_release_vs_bare"] = res["quantix_warm_after_python_change_s"] / warm
    res["ratio_warm_fast_vs_bare"] = res["quantix_fast_warm_after_python_change_s"] / warm
    res["ratio_warm_fast_full_vs_bare"] = res["quantix_fast_warm_after_python_change_full_s"] / warm
    return res


def _boot_until(disk: Path, pattern: str, timeout: float = 900, secure_boot_vars: Path | None = None) -> float:
    from qx_build import qemu

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serial.log"
        m = qemu.Machine(Path(tmp), disk=disk, serial_log=log, secure_boot_vars=secure_boot_vars)
        m.prepare()
        t0 = time.monotonic()
        proc = subprocess.Popen(m.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            rx = re.compile(pattern)
            while time.monotonic() - t0 < timeout:
                text = log.read_bytes().decode("utf-8", "replace") if log.exists() else ""  # QEMU creates it
                if rx.search(text):
                    return time.monotonic() - t0
                time.sleep(0.5)
            raise TimeoutError(pattern)
        finally:
            proc.kill()
            proc.wait()


def bench_boot() -> dict[str, float]:
    from qx_build.paths import Release, read_version
    from qx_build.qemu import resolve_accel

    def bare_image() -> Path | None:
        return next((BARE_DIR / "out").glob("*.raw"), None) if (BARE_DIR / "out").exists() else None

    if bare_image() is None:
        # 'bench/image.py build' leaves it; otherwise build just the bare baseline (not timed here).
        print("building the bare baseline image (mkosi, same packages) ...", file=sys.stderr)
        shutil.rmtree(BARE_DIR, ignore_errors=True)
        _bare_config(BARE_DIR)
        subprocess.run(["mkosi", "-f", "build"], cwd=BARE_DIR, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bare = bare_image()
    assert bare is not None
    ours = Release(read_version(), REPO / "build").disk
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    bare_s, ours_s = [], []
    for _ in range(rounds):  # alternate, so both see the same machine noise
        bare_s.append(_boot_until(bare, r"login:"))
        ours_s.append(_boot_until(ours, r"QUANTIX-CONSOLE-READY"))
    med = statistics.median
    return {
        "accel": resolve_accel("auto"),  # type: ignore[dict-item]
        "rounds": rounds,  # type: ignore[dict-item]
        "bare_login_prompt_s": med(bare_s),
        "quantix_console_ready_s": med(ours_s),
        "bare_login_prompt_all_s": bare_s,  # type: ignore[dict-item]
        "quantix_console_ready_all_s": ours_s,  # type: ignore[dict-item]
    }


def _boot_marks(disk: Path, patterns: dict[str, str], timeout: float = 1200,
                secure_boot_vars: Path | None = None) -> dict[str, float]:
    """One boot: seconds from QEMU start to the first match of each pattern (the boot ends at the last)."""
    from qx_build import qemu

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serial.log"
        m = qemu.Machine(Path(tmp), disk=disk, serial_log=log, secure_boot_vars=secure_boot_vars)
        m.prepare()
        t0 = time.monotonic()
        proc = subprocess.Popen(m.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        marks: dict[str, float] = {}
        try:
            while len(marks) < len(patterns):
                if time.monotonic() - t0 > timeout:
                    raise TimeoutError(f"{sorted(set(patterns) - set(marks))} after {timeout} s")
                text = log.read_bytes().decode("utf-8", "replace") if log.exists() else ""  # QEMU creates it
                for name, pattern in patterns.items():
                    if name not in marks and re.search(pattern, text):
                        marks[name] = time.monotonic() - t0
                time.sleep(0.5)
            return marks
        finally:
            proc.kill()
            proc.wait()


def bench_secureboot() -> dict[str, object]:
    """One image, two firmwares, alternating: QEMU start → the kernel's EFI stub (firmware, systemd-boot
    and the UKI loaded: where Secure Boot's signature checks happen) and → QUANTIX-NODE-HEALTHY."""
    from qx_build import qemu
    from qx_build.paths import Release, read_version
    from qx_build.qemu import resolve_accel

    rel = Release(read_version(), REPO / "build")
    sb = json.loads(rel.manifest.read_text())["secure_boot"]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    marks = {"stub": r"EFI stub: Loaded initrd", "healthy": r"QUANTIX-NODE-HEALTHY"}
    if len(sys.argv) > 3 and sys.argv[3] == "stub":   # the firmware part only: where the checks happen
        del marks["healthy"]
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        cert = Path(tmp) / "db.crt"
        cert.write_text(sb["certificate_pem"])
        sb_vars = qemu.enrolled_vars(cert, Path(tmp) / "sb-vars.fd")
        for _ in range(rounds):  # alternate, so both see the same machine noise
            runs["off"].append(_boot_marks(rel.disk, marks))
            runs["on"].append(_boot_marks(rel.disk, marks, secure_boot_vars=sb_vars))
    med = statistics.median
    res: dict[str, object] = {"accel": resolve_accel("auto"), "rounds": rounds}
    for mode in ("off", "on"):
        for mark in marks:
            res[f"secure_boot_{mode}_{mark}_s"] = med(r[mark] for r in runs[mode])
            res[f"secure_boot_{mode}_{mark}_all_s"] = [round(r[mark], 1) for r in runs[mode]]
    return res


# Read throughput of the root, cold (O_DIRECT: no page cache), through dm-verity and of the same partition
# without it, alternating, in the guest: a one-shot unit handed over as a systemd credential
# (systemd.extra-unit.*, SMBIOS type 11), reporting on the console through the kernel log.
_READ_MIB = 300
# ($$: systemd would expand $dev itself.)
_READ_SCRIPT = (
    "for i in 1 2 3; do for dev in /dev/mapper/root /dev/disk/by-partlabel/root-a; do "
    f"r=$$(dd if=$$dev of=/dev/null bs=1M count={_READ_MIB} iflag=direct 2>&1 | tail -n 1); "
    'echo "<3>QX-BENCH-READ $$dev $$r" >/dev/kmsg; done; done; echo "<3>QX-BENCH-READ-DONE" >/dev/kmsg')
_READ_UNIT = ("[Unit]\nAfter=multi-user.target\n[Service]\nType=oneshot\n"
              f"ExecStart=/bin/sh -c '{_READ_SCRIPT}'\n")
# Credentials' units are loaded, not started: a drop-in makes multi-user.target want it.
_READ_WANTS = "[Unit]\nWants=qx-bench-read.service\n"


def _without_verity(disk: Path, out: Path) -> Path:
    """A copy of ``disk`` whose slot A entry mounts root-a directly (no roothash=): the same bytes, no
    dm-verity. Only the entry changes, so Secure Boot must be off (the stub would use the UKI's line)."""
    from qx_build import esp
    from qx_build.paths import read_mkosi_setting
    from qx_update import bootentry

    subprocess.run(["cp", "--sparse=always", str(disk), str(out)], check=True)
    e = esp.EspImage(out, source_date_epoch=int(read_mkosi_setting("SourceDateEpoch")))
    name = f"{bootentry.ENTRIES_DIR}/{bootentry.EntryName('a').filename}"
    entry = e.read_text(name)
    options = next(line for line in entry.splitlines() if line.startswith("options "))
    words = [w for w in options.split()[1:] if not w.startswith(("roothash=", "root="))]
    e.write_text(name, entry.replace(options, "options " + " ".join(["root=PARTLABEL=root-a", *words])))
    return out


def bench_verity() -> dict[str, object]:
    """Boot to the console with dm-verity and Secure Boot on, verity only, and neither (same image,
    alternating), and the root's cold read throughput with and without verity (guest, TCG)."""
    import base64

    from qx_build import qemu
    from qx_build.paths import Release, read_version
    from qx_build.qemu import resolve_accel

    rel = Release(read_version(), REPO / "build")
    sb = json.loads(rel.manifest.read_text())["secure_boot"]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    marks = {"console": r"QUANTIX-CONSOLE-READY"}
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "verity": [], "verity_sb": []}
    with tempfile.TemporaryDirectory(dir=REPO / "build" / ".work") as tmp:
        cert = Path(tmp) / "db.crt"
        cert.write_text(sb["certificate_pem"])
        sb_vars = qemu.enrolled_vars(cert, Path(tmp) / "sb-vars.fd")
        plain = _without_verity(rel.disk, Path(tmp) / "plain.raw")
        for _ in range(rounds):  # alternate, so all three see the same machine noise
            runs["plain"].append(_boot_marks(plain, marks))
            runs["verity"].append(_boot_marks(rel.disk, marks))
            runs["verity_sb"].append(_boot_marks(rel.disk, marks, secure_boot_vars=sb_vars))
        unit, wants = (base64.b64encode(t.encode()).decode() for t in (_READ_UNIT, _READ_WANTS))
        text = _boot_log(rel.disk, r"QX-BENCH-READ-DONE", extra=[
            "-smbios", f"type=11,value=io.systemd.credential.binary:systemd.extra-unit.qx-bench-read.service={unit}",
            "-smbios", f"type=11,value=io.systemd.credential.binary:systemd.unit-dropin.multi-user.target={wants}"])
    med = statistics.median
    res: dict[str, object] = {"accel": resolve_accel("auto"), "rounds": rounds}
    for mode, r in runs.items():
        res[f"{mode}_console_ready_s"] = med(x["console"] for x in r)
        res[f"{mode}_console_ready_all_s"] = [round(x["console"], 1) for x in r]
    for key, dev in (("verity", "/dev/mapper/root"), ("raw", "/dev/disk/by-partlabel/root-a")):
        speeds = [_mb_s(m.group(1)) for m in re.finditer(rf"QX-BENCH-READ {re.escape(dev)} (.*)", text)]
        res[f"read_{key}_mb_s"] = med(speeds) if speeds else None
        res[f"read_{key}_all_mb_s"] = speeds
    return res


def _mb_s(dd_line: str) -> float:
    """dd's "… copied, 2.5 s, 126 MB/s" as MB/s."""
    m = re.search(r"copied, ([0-9.]+) s", dd_line)
    if not m:
        raise ValueError(f"not a dd summary: {dd_line!r}")
    return round(_READ_MIB * 1024 * 1024 / float(m.group(1)) / 1e6, 1)


def _boot_log(disk: Path, pattern: str, *, extra: list[str], timeout: float = 1500) -> str:
    """Boot ``disk`` until ``pattern`` is on the console; the console log."""
    from qx_build import qemu

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serial.log"
        m = qemu.Machine(Path(tmp), disk=disk, serial_log=log, extra=extra)
        m.prepare()
        proc = subprocess.Popen(m.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < timeout:
                text = log.read_bytes().decode("utf-8", "replace") if log.exists() else ""
                if re.search(pattern, text):
                    return text
                time.sleep(1)
            raise TimeoutError(pattern)
        finally:
            proc.kill()
            proc.wait()


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    benches = {"build": bench_build, "boot": bench_boot, "secureboot": bench_secureboot, "verity": bench_verity}
    if what not in benches:
        raise SystemExit("usage: bench/image.py build|boot|secureboot|verity [ROUNDS]")
    res = benches[what]()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"image-{what}{'-' + sys.argv[3] if len(sys.argv) > 3 else ''}.json").write_text(json.dumps(res, indent=2) + "\n")
    print("| measure | value |\n|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.1f} |" if isinstance(v, float) else f"| {k} | {v} |")


if __name__ == "__main__":
    main()
