"""``qx-release``: the release engineer's client of qx-update-server.

    qx-release --server URL --token TOKEN publish --channel dev build/
    qx-release promote 0.2.0 --to beta          qx-release yank 0.2.0      qx-release remove 0.2.0
    qx-release rollout 0.2.0 --percent 10       qx-release rollout 0.2.0 --pause | --resume
    qx-release list                             qx-release keys init|rotate|status
    qx-release export DIR                       (a complete, verified offline copy of the repository)

Offline root keys (on an administrator's machine; no server needed but for push-root):

    qx-release keys init --offline DIR [--root-keys 3 --threshold 2]   root + online keys, root version 1
    qx-release keys sign-root --offline DIR [--new-root-keys N --threshold M] [--new-online-keys] [--expires-days D]
    qx-release --server URL keys push-root --offline DIR               upload the newest root (scope keys)

``keys init`` without ``--offline`` asks the server to generate every key itself, root keys included:
a development shortcut, not for production (docs/update-format.md §2.3).

``--server`` also comes from ``QX_RELEASE_SERVER``; the token from ``QX_RELEASE_TOKEN``, a file
(``--token-file`` or ``QX_RELEASE_TOKEN_FILE``) or ``--token`` (least preferred: argv shows in ps).
``--json`` prints the server's answer as JSON on stdout (progress stays on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from qx_common.cli import entry
from qx_common.errors import EnvironmentError_, ExternalError, UserError
from qx_update_server import contract, release
from qx_common.progress import Progress

CHUNK = 1 << 20
TIMEOUT = (10, 600)


def check_server_url(url: str) -> str:
    """``--server``: an http(s) URL with a host (and optional port and path), nothing else."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise UserError(f"--server: {url!r} is not a valid URL ({e})",
                        hint="e.g. --server http://updates.example.com:8400") from e
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise UserError(f"--server: {url!r} is not an http(s) URL of the update server",
                        hint="e.g. --server http://updates.example.com:8400 (or set QX_RELEASE_SERVER)")
    return url


def read_token(args: argparse.Namespace) -> str | None:
    """The API token: --token-file / QX_RELEASE_TOKEN_FILE, else QX_RELEASE_TOKEN, else --token (argv is
    visible to every user of the machine in ps, so the others are preferred)."""
    path = args.token_file or os.environ.get("QX_RELEASE_TOKEN_FILE")
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError as e:
            raise UserError(f"--token-file {path}: cannot read it: {e.strerror or e}",
                            hint="give a file holding the token (qx-update-server token create prints it)") from e
        if not token:
            raise UserError(f"--token-file {path}: is empty", hint="write the token into it")
        return token
    return args.token or os.environ.get("QX_RELEASE_TOKEN")


class Client:
    def __init__(self, server: str, token: str | None) -> None:
        self.server = check_server_url(server).rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.session.request(method, self.server + path, timeout=TIMEOUT, **kw)
        except requests.ConnectionError as e:
            raise EnvironmentError_(f"--server: cannot reach {self.server}",
                                    hint="is qx-update-server running and the URL right?") from e
        except requests.RequestException as e:
            raise ExternalError(f"{method} {path}: {e}") from e
        try:
            body = r.json() if r.content else {}
        except ValueError:
            body = {"error": r.text[:200]}
        msg = body.get("error") or body.get("detail") if isinstance(body, dict) else None
        if r.status_code == 401:
            raise UserError("--token: the server did not accept the token",
                            hint="pass --token or set QX_RELEASE_TOKEN (qx-update-server token create)")
        if r.status_code == 403:
            raise UserError(f"--token: {msg}", hint="ask for a token with that scope")
        if r.status_code in (400, 404, 409, 413, 422):
            raise UserError(f"server: {msg if isinstance(msg, str) else json.dumps(msg)}",
                            hint=body.get("hint") if isinstance(body, dict) else None)
        if r.status_code >= 300:
            raise ExternalError(f"server: {method} {path} failed with HTTP {r.status_code}: {msg}")
        return body

    def get_public(self, path: str) -> bytes | None:
        try:
            r = self.session.get(self.server + path, timeout=TIMEOUT)
        except requests.RequestException as e:
            raise EnvironmentError_(f"--server: cannot fetch {path}: {e}") from e
        if r.status_code == 404:
            return None
        if not r.ok:
            raise ExternalError(f"GET {path}: HTTP {r.status_code}")
        return r.content


class _Body:
    """A file's bytes as an upload body: streamed in chunks (progress bar), with a known length.

    Why not a bare generator: ``requests`` cannot size a generator, so it adds
    ``Transfer-Encoding: chunked`` — yet with an explicit Content-Length it then sends the bytes
    *un*-chunked. The server parses them as chunks and waits forever for the terminating chunk
    (publishing hung). ``__len__`` lets requests set Content-Length itself and send a plain body.
    """

    def __init__(self, path: Path, bar: Progress) -> None:
        self.path, self.bar = path, bar
        self.size = path.stat().st_size

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        with self.path.open("rb") as f:
            while chunk := f.read(CHUNK):
                self.bar.update(len(chunk))
                yield chunk


def publish(c: Client, args: argparse.Namespace) -> Any:
    for f in args.files:
        if not Path(f).exists():
            raise UserError(f"{f}: no such file or directory", hint="give the build directory, e.g. build/")
    rel = release.load([Path(p) for p in args.files])  # refuses a SHA256SUMS/manifest mismatch up front
    if args.notes_file:
        try:
            notes = Path(args.notes_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--notes-file {args.notes_file}: cannot read it: {getattr(e, 'strerror', None) or e}",
                            hint="give a UTF-8 text file, or the notes themselves with --notes") from e
    else:
        notes = args.notes
    contract.check_notes(notes, "--notes-file" if args.notes_file else "--notes")  # before uploading anything
    up = c.call("POST", "/v1/uploads")
    total = sum(p.stat().st_size for p in rel.upload_files)
    bar = Progress(f"uploading {rel.version}", total)
    for p in rel.upload_files:
        c.call("PUT", f"/v1/uploads/{up['upload_id']}/{p.name}", data=_Body(p, bar),
               headers={"Content-Type": "application/octet-stream"})
    bar.close()
    return c.call("POST", f"/v1/uploads/{up['upload_id']}/publish", json={"channel": args.channel, "notes": notes})


def export(c: Client, dest: Path) -> dict[str, Any]:
    """Copy metadata + targets through the public URLs, then verify the copy with python-tuf's ngclient."""
    if dest.exists() and not dest.is_dir():
        raise UserError(f"export: {dest} is a file", hint="give a new or empty directory")
    if dest.exists() and any(dest.iterdir()):
        raise UserError(f"export: {dest} is not empty", hint="give a new or empty directory")
    tmp = dest.with_name(dest.name + ".partial")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "metadata").mkdir(parents=True)
        (tmp / "targets").mkdir()
        return _export(c, dest, tmp)
    except OSError as e:
        raise EnvironmentError_(f"export: cannot write to {getattr(e, 'filename', None) or dest}: {e.strerror or e}",
                                hint="choose a directory this user can write, with enough free space") from e
    except (ValueError, KeyError, TypeError) as e:
        raise ExternalError(f"export: the server's metadata is not valid TUF metadata: {e}",
                            hint="check the server's repository (qx-release keys status); nothing was exported") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export_chunks(c: Client, tmp: Path, entries: dict[str, Any], verified: list[str]) -> None:
    """The chunks the verified chunk indexes name (docs/update-format.md §5), each checked against its
    index, so hosts apply from the copy as a delta; a copy without them takes the full payload."""
    from qx_update.chunkindex import ChunkIndex, chunk_path

    chunks = {}
    for path in verified:
        if not path.endswith(".chunks.json"):
            continue
        d, _, name = path.rpartition("/")
        data = (tmp / "targets" / d / f"{entries[path]['hashes']['sha256']}.{name}").read_bytes()
        chunks |= {ch.sha256: ch for ch in ChunkIndex.from_json(data, path).chunks}
    bar = Progress("exporting chunks", sum(ch.stored_length for ch in chunks.values()))
    for ch in chunks.values():
        rel = chunk_path(ch.sha256)
        with c.session.get(f"{c.server}/targets/{rel}", timeout=TIMEOUT) as r:
            if not r.ok:
                raise ExternalError(f"export: GET /targets/{rel}: HTTP {r.status_code}")
            data = r.content
        if len(data) != ch.stored_length or hashlib.sha256(data).hexdigest() != ch.stored_sha256:
            raise ExternalError(f"export: /targets/{rel} does not match its signed chunk index")
        out = tmp / "targets" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        bar.update(len(data))
    bar.close()


def _export(c: Client, dest: Path, tmp: Path) -> dict[str, Any]:
    """Fetch into ``tmp``, verify, rename to ``dest``. Called by :func:`export`, which cleans up."""
    from qx_update_server.offline import verify_directory  # ngclient only needed here

    def fetch(path: str) -> bytes:
        data = c.get_public(path)
        if data is None:
            raise ExternalError(f"export: {path} is missing on the server")
        return data

    n = 1
    while (data := c.get_public(f"/metadata/{n}.root.json")) is not None:
        (tmp / "metadata" / f"{n}.root.json").write_bytes(data)
        n += 1
    if n == 1:
        raise UserError("export: the repository has no root metadata", hint="run qx-release keys init first")
    shutil.copyfile(tmp / "metadata" / f"{n - 1}.root.json", tmp / "metadata" / "root.json")
    ts = fetch("/metadata/timestamp.json")
    (tmp / "metadata" / "timestamp.json").write_bytes(ts)
    sv = json.loads(ts)["signed"]["meta"]["snapshot.json"]["version"]
    snap = fetch(f"/metadata/{sv}.snapshot.json")
    (tmp / "metadata" / f"{sv}.snapshot.json").write_bytes(snap)
    tv = json.loads(snap)["signed"]["meta"]["targets.json"]["version"]
    targets = fetch(f"/metadata/{tv}.targets.json")
    (tmp / "metadata" / f"{tv}.targets.json").write_bytes(targets)
    entries = json.loads(targets)["signed"]["targets"]
    # Each release is signed in its own delegated role (docs/update-format.md §2.1): copy them all.
    meta = json.loads(snap)["signed"]["meta"]
    for role in (json.loads(targets)["signed"].get("delegations") or {}).get("roles", []):
        name = f"{role['name']}.json"
        if name not in meta or "/" in name:
            raise ExternalError(f"export: the snapshot does not list the delegated role {role['name']!r}")
        data = fetch(f"/metadata/{meta[name]['version']}.{name}")
        (tmp / "metadata" / f"{meta[name]['version']}.{name}").write_bytes(data)
        entries |= json.loads(data)["signed"]["targets"]
    bar = Progress("exporting targets", sum(t["length"] for t in entries.values()))
    for path, t in entries.items():
        d, _, name = path.rpartition("/")
        rel = f"{d}/{t['hashes']['sha256']}.{name}" if d else f"{t['hashes']['sha256']}.{name}"
        if rel.startswith("/") or ".." in rel.split("/"):  # not yet verified: never write outside tmp
            raise ExternalError(f"export: the server lists a target path {path!r} outside the repository")
        out = tmp / "targets" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with c.session.get(f"{c.server}/targets/{rel}", stream=True, timeout=TIMEOUT) as r:
            if not r.ok:
                raise ExternalError(f"export: GET /targets/{rel}: HTTP {r.status_code}")
            with out.open("wb") as f:
                for chunk in r.iter_content(CHUNK):
                    f.write(chunk)
                    bar.update(len(chunk))
    bar.close()
    verified = verify_directory(tmp, (tmp / "metadata" / "1.root.json").read_bytes())
    _export_chunks(c, tmp, entries, verified)
    if dest.exists():
        dest.rmdir()
    tmp.rename(dest)
    return {"directory": str(dest), "root_version": n - 1, "targets": sorted(verified)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qx-release", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default=os.environ.get("QX_RELEASE_SERVER"), help="e.g. http://updates:8400")
    p.add_argument("--token", help="API token; prefer QX_RELEASE_TOKEN or --token-file (argv shows in ps)")
    p.add_argument("--token-file", help="file holding the API token (or QX_RELEASE_TOKEN_FILE)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--debug", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("publish", help="upload and sign a release from a build directory")
    s.add_argument("--channel", default="dev", choices=contract.CHANNELS)
    s.add_argument("--notes", default="")
    s.add_argument("--notes-file")
    s.add_argument("files", nargs="+", help="build directory or the release's files")
    s = sub.add_parser("promote")
    s.add_argument("version")
    s.add_argument("--to", required=True, choices=contract.CHANNELS)
    s = sub.add_parser("yank")
    s.add_argument("version")
    s = sub.add_parser("remove", help="take a release out of the signed metadata for good")
    s.add_argument("version")
    s = sub.add_parser("rollout")
    s.add_argument("version")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--percent", type=float)
    g.add_argument("--pause", action="store_true")
    g.add_argument("--resume", action="store_true")
    sub.add_parser("list")
    k = sub.add_parser("keys")
    ks = k.add_subparsers(dest="kcmd", required=True)
    ki = ks.add_parser("init", help="--offline DIR: make root and online keys here (production); without: the "
                                    "server makes every key, root keys included (development only)")
    ki.add_argument("--offline", type=Path, metavar="DIR",
                    help="a new directory on offline media: root-keys/ (keep offline), online-keys/ (for the "
                         "server), N.root.json and root.json")
    ki.add_argument("--root-keys", type=int, default=1, help="number of root keys (default 1)")
    ki.add_argument("--threshold", type=int, default=1, help="root keys needed to sign a new root")
    ks.add_parser("rotate", help="development setups only: the server replaces every key itself")
    ks.add_parser("status")
    kr = ks.add_parser("sign-root", help="sign the next root version in an offline directory (new expiry, "
                                         "optionally new root keys), with the threshold of old and new root keys")
    kr.add_argument("--offline", type=Path, metavar="DIR", required=True)
    kr.add_argument("--new-root-keys", type=int, metavar="N", help="replace the root keys by N new ones")
    kr.add_argument("--threshold", type=int, metavar="M", help="root keys needed from now on (default: unchanged)")
    kr.add_argument("--new-online-keys", action="store_true",
                    help="replace the timestamp, snapshot and targets keys too (a leaked online key); give the new "
                         "ones to the server (qx-update-server keys add-online) before push-root")
    kr.add_argument("--expires-days", type=int, default=365, help="the new root's lifetime (default 365)")
    kr.add_argument("--partial", action="store_true",
                    help="root keys held by several people: sign what this directory can and write the draft "
                         "DIR/next.root.json for the others to --cosign")
    kr.add_argument("--cosign", type=Path, metavar="DRAFT",
                    help="add this directory's root key signatures to a draft another holder made")
    kp = ks.add_parser("push-root", help="upload the offline directory's newest root to the server (scope keys)")
    kp.add_argument("--offline", type=Path, metavar="DIR", required=True)
    e = sub.add_parser("export")
    e.add_argument("dir", type=Path)
    return p


def _human(cmd: str, out: Any) -> str:
    if cmd == "list":
        lines = [f"{'VERSION':<14} {'CHANNELS':<18} {'ROLLOUT':<16} {'EPOCH':<6} NOTES"]
        for r in out["releases"]:
            ro = r["rollout"]
            roll = f"{float(ro['fraction']) * 100:g}%" + (" paused" if ro["paused"] else "")
            chans = "YANKED" if r["yanked"] else ",".join(r["channels"])
            lines.append(f"{r['version']:<14} {chans:<18} {roll:<16} {r['security_epoch']:<6} {r['notes'][:40]}")
        retired = out.get("retired") or []
        if retired:
            lines.append("retired (no longer signed): " + ", ".join(f"{r['version']} ({r['reason']})" for r in retired[:10])
                         + (f" and {len(retired) - 10} more" if len(retired) > 10 else ""))
        return "\n".join(lines)
    if cmd == "keys":
        lines = []
        for role, r in out.get("roles", {}).items():
            lines.append(f"{role:<10} v{r['version']:<4} expires {r['expires']} ({r['days_left']} days) "
                         f"keys {r['keys_present']}/{r['threshold']}" + (f"  WARNING: {r['warning']}" if r["warning"] else ""))
        if out.get("root_keys") and out["root_keys"] != "offline":
            lines.append(f"NOTE: root keys: {out['root_keys']} — for hosts you ship, set a server up with offline "
                         "root keys (qx-release keys init --offline DIR; docs/update-format.md §2.3)")
        return "\n".join(lines) or "no keys yet: qx-release keys init --offline DIR (or, for development, keys init)"
    if cmd == "remove":
        return f"{out['version']}: removed from the signed metadata ({out['retired']['at']})"
    if cmd == "export":
        return f"exported {len(out['targets'])} targets (root v{out['root_version']}) to {out['directory']}, verified"
    if isinstance(out, dict) and "version" in out:
        chans = "yanked" if out["yanked"] else ",".join(out["channels"])
        return f"{out['version']}: channels {chans}, rollout {float(out['rollout']['fraction']) * 100:g}%" + (
            " paused" if out["rollout"]["paused"] else "")
    return json.dumps(out, indent=2)


def _offline(args: argparse.Namespace) -> Any | None:
    """``keys init --offline`` and ``keys sign-root``: local work on the offline directory, no server."""
    from qx_update_server import rootkeys

    if args.cmd != "keys" or not (args.kcmd == "sign-root" or args.kcmd == "init" and args.offline):
        return None
    d = rootkeys.OfflineDir(args.offline)
    if args.kcmd == "init":
        md = rootkeys.init(args.offline, root_keys=args.root_keys, threshold=args.threshold)
    elif args.cosign is not None:
        md = rootkeys.cosign(args.offline, args.cosign)
    else:
        md = rootkeys.sign_root(args.offline, new_root_keys=args.new_root_keys, threshold=args.threshold,
                                new_online_keys=args.new_online_keys, expires_days=args.expires_days,
                                partial=args.partial)
    root = md.signed
    if args.kcmd == "sign-root" and not d.root_file(root.version).exists():
        draft = args.cosign or d.path / rootkeys.DRAFT
        lack = rootkeys.missing(d.newest().signed, md)
        need = " and ".join(f"{n} more of the {'current' if k == 'current' else 'new'} root keys" for k, n in lack.items())
        return {"directory": str(args.offline), "root_version": root.version, "draft": str(draft),
                "missing": lack, "root_threshold": root.roles["root"].threshold, "root_keyids": root.roles["root"].keyids,
                "expires": root.expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "root_json": str(draft),
                "next": f"draft signed so far; it needs {need}: each holder runs qx-release keys sign-root "
                        f"--offline THEIR_DIR --cosign {draft.name}"}
    return {"directory": str(args.offline), "root_version": root.version, "root_json": str(d.root_json),
            "root_threshold": root.roles["root"].threshold, "root_keyids": root.roles["root"].keyids,
            "expires": root.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "next": (f"keep {d.root_keys.path} offline; set the server up with: qx-update-server init --data-dir DIR "
                     f"--root {d.root_json} --online-keys {d.online_keys.path}") if args.kcmd == "init" else
                    (f"copy {d.online_keys.path} to the server and run there: qx-update-server keys add-online "
                     f"--data-dir DIR --root root.json --online-keys online-keys; then " if args.new_online_keys else "")
                    + f"upload it: qx-release --server URL keys push-root --offline {args.offline}"}


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    local = _offline(args)
    if local is not None:
        print(json.dumps(local, indent=2, sort_keys=True) if args.json else
              f"root version {local['root_version']} (threshold {local['root_threshold']} of "
              f"{len(local['root_keyids'])} root keys, expires {local['expires']}) in {local['root_json']}\n"
              f"next: {local['next']}")
        return 0
    if not args.server:
        raise UserError("--server: not given", hint="pass --server URL or set QX_RELEASE_SERVER")
    token = read_token(args)
    c = Client(args.server, token)
    if args.cmd not in ("export",) and not token:
        raise UserError("--token: not given", hint="set QX_RELEASE_TOKEN, or pass --token-file FILE")
    if args.cmd == "rollout" and args.percent is not None and not 0 <= args.percent <= 100:
        raise UserError(f"--percent: {args.percent:g} is not a percentage",
                        hint="give a number from 0 to 100 (e.g. --percent 10), or --pause / --resume")
    if args.cmd == "publish":
        out = publish(c, args)
    elif args.cmd == "promote":
        out = c.call("POST", f"/v1/releases/{args.version}/promote", json={"to": args.to})
    elif args.cmd == "yank":
        out = c.call("POST", f"/v1/releases/{args.version}/yank")
    elif args.cmd == "remove":
        out = c.call("POST", f"/v1/releases/{args.version}/remove")
    elif args.cmd == "rollout":
        body = {"percent": args.percent} if args.percent is not None else {"paused": bool(args.pause)}
        out = c.call("POST", f"/v1/releases/{args.version}/rollout", json=body)
    elif args.cmd == "list":
        out = c.call("GET", "/v1/releases")
    elif args.cmd == "keys":
        if args.kcmd == "init":
            out = c.call("POST", "/v1/keys/init", json={"root_keys": args.root_keys, "threshold": args.threshold})
        elif args.kcmd == "rotate":
            out = c.call("POST", "/v1/keys/rotate")
        elif args.kcmd == "push-root":
            from qx_update_server import rootkeys

            newest = rootkeys.OfflineDir(args.offline).newest()  # the server checks it again, against its root
            out = c.call("POST", "/v1/keys/root", json={"root": newest.to_dict()})
        else:
            out = c.call("GET", "/v1/keys/status")
    else:
        out = export(c, args.dir)
    print(json.dumps(out, indent=2, sort_keys=True) if args.json else _human(args.cmd, out))
    return 0


main = entry(run)

if __name__ == "__main__":
    sys.exit(main())
