"""Rules checked without the network: config validation, release choice, rollout, the health probe over TLS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tuf.api.metadata import TargetFile

from qx_common.errors import UserError
from qx_update import config, health, releases


@pytest.mark.parametrize(("text", "needle"), [
    ('channel = "nightly"', "'channel'"),
    ('server_url = "ftp://x"', "'server_url'"),
    ('maintenance_window = "2-4"', "'maintenance_window'"),
    ('gate_timeout = -1', "'gate_timeout'"),
    ('tries = 0', "'tries'"),
    ('running_slot = "c"', "'running_slot'"),
    ('colour = "red"', "'colour' is not a known setting"),
    ('[slots]\na = "/dev/x"\nb = "/dev/x"', "same device"),
    ('[slots]\na = "/dev/x"', "'slots'"),
    ('[verity]\na = "/dev/x"\nb = "/dev/x"', "same device"),
    ('[verity]\na = "/dev/x"', "'verity' must be a table with exactly the keys a and b"),
    ('verity = "/dev/x"', "'verity' must be a table"),
    ('[slots]\na = "/dev/x"\nb = "/dev/y"\n[verity]\na = "/dev/z"\nb = "/dev/x"', "/dev/x, which is also a slot"),
    # A slot on a default verity partition (the [verity] table left out) is refused all the same.
    ('[slots]\na = "/dev/disk/by-partlabel/root-a-verity"\nb = "/dev/y"', "also a slot"),
    ('channel = ', "not valid TOML"),
])
def test_config_rejects_bad_values_naming_the_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "u.toml"
    f.write_text(f'override = "{tmp_path}/none.toml"\n' + text + "\n")
    with pytest.raises(UserError) as e:
        config.load(f)
    assert needle in e.value.message and str(f) in e.value.message and e.value.hint


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "u.toml"
    f.write_text('override = "ov.toml"\nstate_dir = "state"\n[slots]\na = "a.img"\nb = "b.img"\n')
    cfg = config.load(f)
    assert cfg.state_dir == tmp_path / "state" and cfg.slots["b"] == tmp_path / "b.img"


def test_verity_partitions_default_to_the_labels_and_follow_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "u.toml"
    f.write_text('override = "ov.toml"\n')
    assert config.load(f).verity == {"a": Path("/dev/disk/by-partlabel/root-a-verity"),
                                     "b": Path("/dev/disk/by-partlabel/root-b-verity")}
    f.write_text('override = "ov.toml"\n[verity]\na = "va.img"\nb = "/dev/loop0p5"\n')
    assert config.load(f).verity == {"a": tmp_path / "va.img", "b": Path("/dev/loop0p5")}
    shipped = Path(__file__).resolve().parents[2] / "image/extra/usr/lib/quantix/update.toml"
    assert config.load(shipped).verity == config.Config().verity


def test_a_boot_entry_keeps_a_verity_command_line() -> None:
    """A verity line's root is the slot its root hash names: the entry passes the UKI's words unchanged
    (a root=PARTLABEL= added here would mount the slot unverified); the old form still gets the slot's."""
    from qx_common import verity
    from qx_update import bootentry

    line = f"root=/dev/mapper/root rootfstype=erofs ro roothash={'ab' * 32} console=ttyS0,115200"
    assert bootentry.slot_cmdline(line, "b") == line and bootentry.slot_cmdline(line, "a") == line
    assert f"options {line}\n" in bootentry.render_entry(version="1.2.0", slot="b", base_cmdline=line)
    assert bootentry.slot_cmdline(line.replace(" ", "  ") + "\n", "b") == line   # one line, one space
    old = "root=PARTLABEL=root-a rootfstype=erofs ro console=ttyS0,115200"
    assert bootentry.slot_cmdline(old, "b") == old.replace("root-a", "root-b")
    with pytest.raises(verity.VerityError, match="placeholder"):
        bootentry.slot_cmdline(f"root=/dev/mapper/root {verity.ROOTHASH_PLACEHOLDER}", "b")


def _target(version: str, **q: object) -> tuple[str, TargetFile]:
    path = f"{version}/quantix-os_{version}.root.erofs.zst"
    tf = TargetFile.from_data(path, b"x", ["sha256"])
    tf.unrecognized_fields["custom"] = {"quantix": {
        "version": version, "artifact": "root", "channels": ["stable"], "security_epoch": 0,
        "slot_size": 100, "slot_sha256": "0" * 64, "kernel_cmdline": "root=x", "yanked": False, **q}}
    return path, tf


def test_newest_eligible_release_wins_and_skips_are_explained() -> None:
    targets = dict([_target("1.1.0"), _target("1.3.0", yanked=True), _target("1.2.0"),
                    _target("1.4.0", slot_size=1000), _target("1.5.0", rollout={"fraction": 1, "paused": True}),
                    _target("1.6.0", rollout={"fraction": 1, "start": "2999-01-01T00:00:00Z"})])
    ch = releases.choose(targets, channel="stable", running_version="1.0.0", floor=0, slot_capacity=500, host_id="h")
    assert ch.release is not None and ch.release.version == "1.2.0"
    why = {s["version"]: s["reason"] for s in ch.skipped}
    assert why["1.3.0"] == "yanked" and "slot" in why["1.4.0"]
    assert why["1.5.0"] == "rollout paused" and why["1.6.0"].startswith("rollout starts at")


def test_rollout_position_follows_the_contract_and_is_stable() -> None:
    import hashlib

    expect = int(hashlib.sha256(b"host-1:1.2.0").hexdigest()[:8], 16) / 2**32
    assert releases.rollout_position("host-1", "1.2.0") == expect
    hosts = [f"h{i}" for i in range(2000)]
    share = sum(releases.rollout_reason({"fraction": "0.25"}, h, "1.2.0", dt.datetime.now(dt.timezone.utc)) is None
                for h in hosts) / len(hosts)
    assert 0.2 < share < 0.3
    assert releases.parse_fraction(0.5) == 0.5 and releases.parse_fraction("1.5") is None
    assert releases.parse_fraction(True) is None


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qx-node")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    c, k = tmp_path / "cert.pem", tmp_path / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return c, k


def test_health_probe_verifies_qx_node_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            raw = json.dumps({"status": "ok", "components": {"libvirt": {"ok": True, "detail": "up"}}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *a: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{srv.server_address[1]}/health"
    try:
        assert health.probe(url, cert) == (True, "healthy")
        other, _ = _self_signed(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path)
        ok, reason = health.probe(url, other)
        assert not ok and "unreachable" in reason
        ok, reason = health.wait("http://127.0.0.1:9/health", cert, timeout=0.2, interval=0.05)
        assert not ok
    finally:
        srv.shutdown()


def test_gate_stops_waiting_when_systemd_says_the_node_cannot_come_up() -> None:
    """A masked or finally failed qx-node ends the wait with systemd's reason, long before the deadline."""
    asked: list[str] = []
    systemd = {"qx-node.service": [None, None, "qx-node.service is masked: it cannot start in this boot"]}

    def down(unit: str) -> str | None:  # systemd's answers, one per poll (systemd is not PID 1 here)
        asked.append(unit)
        answers = systemd[unit]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    ok, reason = health.wait("http://127.0.0.1:9/health", Path("/nonexistent"), timeout=3600, interval=0.01,
                             down=down)
    assert (ok, reason) == (False, "qx-node.service is masked: it cannot start in this boot")
    assert asked == ["qx-node.service"] * 3

    # While the unit may still come up (starting, restarting) the gate keeps polling until its deadline.
    ok, reason = health.wait("http://127.0.0.1:9/health", Path("/nonexistent"), timeout=0.2, interval=0.05,
                             down=lambda unit: None)
    assert not ok and "unreachable" in reason


def test_gate_keeps_waiting_when_systemd_cannot_be_asked() -> None:
    # This machine's systemctl exists but systemd is not PID 1: no verdict, so no early failure.
    assert health.unit_down("qx-node.service") is None


def test_host_override_may_tune_boot_tries_and_gate_timeout_but_validates_them(tmp_path: Path) -> None:
    base = tmp_path / "u.toml"
    base.write_text(f'override = "{tmp_path}/ov.toml"\ntries = 3\ngate_timeout = 600\n')
    ov = tmp_path / "ov.toml"
    ov.write_text('tries = 1\ngate_timeout = 90\nchannel = "dev"\n')
    cfg = config.load(base)
    assert (cfg.tries, cfg.gate_timeout, cfg.channel) == (1, 90.0, "dev")
    # set_override keeps the types: an int stays a TOML integer, so the file loads back.
    cfg = config.set_override(cfg, "channel", "beta")
    assert "tries = 1\n" in ov.read_text() and config.load(base).tries == 1
    for text, needle in (('tries = 0', "'tries'"), ('tries = "2"', "'tries'"), ('gate_timeout = -5', "'gate_timeout'")):
        ov.write_text(text + "\n")
        with pytest.raises(UserError) as e:
            config.load(base)
        assert needle in e.value.message and str(ov) in e.value.message


def test_the_ukis_own_command_line_decides_whether_a_release_is_verity(tmp_path: Path) -> None:
    """What the firmware boots decides, never the TUF copy of the command line; what cannot be sealed or
    could boot nothing is refused (these checks run before anything is written)."""
    from qx_common.errors import EnvironmentError_
    from qx_update import slotinstall
    from qx_update.errors import VerificationError
    from tests.updates.tufrepo import CMDLINE, uki_with_cmdline, verity_cmdline

    roothash, line = verity_cmdline(b"\x01" * 8192)
    uki, plain = uki_with_cmdline(line, tmp_path), tmp_path / "plain.efi"
    plain.write_bytes(b"MZ no command line")
    part = tmp_path / "verity-b.img"
    part.touch()

    def rel(cmdline: str, size: int = 8192) -> slotinstall.Release:
        return slotinstall.Release(version="1.2.0", security_epoch=0, slot_size=size, slot_sha256="0" * 64,
                                   kernel_cmdline=cmdline)

    assert slotinstall.verity_roothash(uki, part, rel=rel(CMDLINE), target="b") == roothash   # TUF's copy is old
    assert slotinstall.verity_roothash(plain, None, rel=rel(CMDLINE), target="b") is None
    with pytest.raises(EnvironmentError_, match="slot B has no verity partition") as e:
        slotinstall.verity_roothash(uki, tmp_path / "absent", rel=rel(line), target="b")
    assert e.value.hint and "reinstall from the ISO with 'keep data'" in e.value.hint
    with pytest.raises(EnvironmentError_, match="none configured"):
        slotinstall.verity_roothash(uki, None, rel=rel(line), target="b")
    with pytest.raises(VerificationError, match="kernel_cmdline has roothash="):
        slotinstall.verity_roothash(plain, part, rel=rel(line), target="b")
    with pytest.raises(VerificationError, match="mounts root=PARTLABEL=root-a"):
        slotinstall.verity_roothash(uki_with_cmdline(f"{line} root=PARTLABEL=root-a", tmp_path), part,
                                    rel=rel(line), target="b")
    with pytest.raises(VerificationError, match="multiple of 4096"):
        slotinstall.verity_roothash(uki, part, rel=rel(line, size=8193), target="b")
