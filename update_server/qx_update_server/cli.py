"""``qx-update-server``: run the service, and manage API tokens on the server's machine.

    qx-update-server init --data-dir /srv/qx-updates --root OFFLINE/root.json --online-keys OFFLINE/online-keys
    qx-update-server serve --listen 127.0.0.1:8400 --data-dir /srv/qx-updates
    qx-update-server keys add-online --data-dir DIR --root OFFLINE/root.json --online-keys OFFLINE/online-keys
    qx-update-server token create --data-dir DIR --name ci --scopes publish,promote,read [--expires-days 90]
    qx-update-server token list --data-dir DIR          qx-update-server token revoke --data-dir DIR ID|NAME
    qx-update-server token create --data-dir DIR --name host-n1 --scopes checkin --host n1
    qx-update-server host forget --data-dir DIR HOST_ID

Tokens, release records, the audit log and the fleet live in SQLite in the data dir by default; with
``--database postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` they live in PostgreSQL instead (tables
created on first start; the password may come from PGPASSWORD). Give ``token create`` the same
--database as ``serve``. The repository and the keys stay in the data dir either way.

``init`` sets a repository up from root metadata and online keys made offline (``qx-release keys init
--offline DIR`` on an administrator's machine): no root private key ever reaches the server, and a
server set up this way refuses to start while one is found in its data directory. Without ``init``,
``qx-release keys init`` (API) makes the server generate every key itself, root keys included — a
development shortcut only (``keys status`` says "on this server (development)").
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import ipaddress
import json
import os
import sys
from pathlib import Path

from qx_common import log
from qx_common.cli import entry
from qx_common.errors import EnvironmentError_, UserError
from qx_update_server import serving, tls
from qx_update_server.storage import SCOPE_HELP, SCOPES, Storage, open_storage, redact_url


def parse_listen(value: str, flag: str = "--listen") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        p = int(port)
        if not sep or not 0 < p < 65536:
            raise ValueError
    except ValueError as e:
        raise UserError(f"{flag}: {value!r} is not ADDRESS:PORT",
                        hint=f"an IP address and a port, e.g. {flag} 127.0.0.1:8400") from e
    return host, p


# Timestamp metadata lives a day and is renewed when less than 12 h are left: a check at least every
# 6 h keeps it valid with room for a failed pass.
MIN_REFRESH = 1.0
MAX_REFRESH = 6 * 3600.0


def _number(flag: str, value: str, lo: float, hi: float, *, default: float, integer: bool = False,
            unit: str = "") -> float:
    try:
        x = int(value) if integer else float(value)
        if not lo <= x <= hi:
            raise ValueError
    except ValueError as e:
        kind, show = ("a whole number", lambda n: str(int(n))) if integer else ("a number", lambda n: f"{n:g}")
        raise UserError(f"{flag}: {value!r} must be {kind} from {show(lo)} to {show(hi)}{unit}",
                        hint=f"e.g. {flag} {show(default)}") from e
    return x


def check_data_dir(path: Path) -> Path:
    """The data directory: created if missing; refused with a hint when it is a file or not writable."""
    if path.exists() and not path.is_dir():
        raise UserError(f"--data-dir {path}: is a file, not a directory",
                        hint="give a directory (it is created if missing), e.g. --data-dir /srv/qx-updates")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentError_(f"--data-dir {path}: cannot create it: {e.strerror or e}",
                                hint="create it, or choose a directory this user can write") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise EnvironmentError_(f"--data-dir {path}: this user cannot write to it",
                                hint="chown it to the user running qx-update-server, or choose another directory")
    return path


def _tls(args: argparse.Namespace, hosts: list[str]) -> tuple[str, str] | None:
    """The (cert, key) files to serve HTTPS with, or None for plain HTTP. Call after check_data_dir."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UserError("--tls-cert and --tls-key: give both or neither", hint="e.g. --tls-cert cert.pem --tls-key key.pem")
    if args.tls_cert is not None and args.tls_self_signed:
        raise UserError("--tls-self-signed: not with --tls-cert", hint="use your certificate or a self-signed one")
    if args.tls_cert is not None:
        return tls.check_pair(args.tls_cert, args.tls_key)
    if not args.tls_self_signed:
        return None
    cert, key, fp, created = tls.self_signed(args.data_dir / "tls", hosts)
    log.step(f"TLS certificate {cert} ({'created now, ' if created else ''}SHA-256 fingerprint {fp})")
    return str(cert), str(key)


def _manage(args: argparse.Namespace, storage: Storage) -> int:
    """token create/list/revoke and host forget, on the server's machine (audited as ``cli:<user>``)."""
    actor = f"cli:{getpass.getuser()}"
    if args.cmd == "host":
        if not storage.forget_host(args.host_id):
            raise UserError(f"host {args.host_id!r}: no host key is bound to it", hint="see the fleet list")
        storage.audit(actor, "host-forget", {"host_id": args.host_id})
        print(f"host {args.host_id}: key unbound; its next check-in with a key binds that key")
        return 0
    if args.tcmd == "create":
        days = None if args.expires_days is None else _number(
            "--expires-days", args.expires_days, 0.001, 3650, default=90, unit=" days")
        secret = storage.create_token(args.name, [s.strip() for s in args.scopes.split(",") if s.strip()],
                                      expires_days=days, host_id=args.host)
        row = next(t for t in storage.list_tokens() if t["name"] == args.name and not t["revoked"])
        storage.audit(actor, "token-create", {"name": args.name, "scopes": row["scopes"], "expires": row["expires"],
                                              "host_id": args.host}, row["id"])
        print(secret)
        print(f"token {row['id']} ({args.name}) created" + (f", expires {row['expires']}" if row["expires"] else ""),
              file=sys.stderr)
        return 0
    if args.tcmd == "revoke":
        row = storage.revoke_token(args.token)
        storage.audit(actor, "token-revoke", {"name": row["name"]}, row["id"])
        print(f"token {row['id']} ({row['name']}) revoked")
        return 0
    rows = storage.list_tokens()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':<17} {'NAME':<20} {'SCOPES':<28} {'CREATED':<21} {'EXPIRES':<21} {'LAST USED':<21} STATE")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for r in rows:
        state = ("revoked " + r["revoked"] if r["revoked"] else "expired" if r["expires"] and r["expires"] <= now
                 else "active") + (f" (host {r['host_id']})" if r["host_id"] else "")
        print(f"{r['id']:<17} {r['name']:<20} {','.join(r['scopes']):<28} {r['created']:<21} {r['expires'] or '-':<21} "
              f"{r['last_used'] or '-':<21} {state}")
    return 0


DEV_TOKEN_FILE = "dev-release-token"


def _dev(args: argparse.Namespace) -> int:
    """``make update-server``: set a data directory up from the development keys once, then serve it.

    The same path as production (``init`` from an offline directory; the root keys are not copied to
    the server), only the "offline" directory is ``build/keys`` on this machine. A release token with
    every scope but ``checkin`` is written to ``DATA_DIR/dev-release-token`` (0600) on first use.
    """
    from qx_update_server.repository import Repository

    parse_listen(args.listen)  # a bad flag is said before anything is set up
    root = args.keys / "root.json"
    if not root.is_file():
        raise UserError(f"--keys {args.keys}: no root.json", hint="make the development keys: make image (or "
                                                                  "qx-build dev-keys)")
    data_dir = check_data_dir(args.data_dir)
    repo = Repository(data_dir)
    if not repo.initialized():
        repo.setup_offline(root, args.keys / "online-keys")
    elif repo.root_bytes(1) != (args.keys / "1.root.json").read_bytes():
        raise UserError(f"--data-dir {data_dir}: was set up with other keys than {args.keys}",
                        hint=f"images built now trust {root}: remove {data_dir} to start a server on these keys")
    token_file = data_dir / DEV_TOKEN_FILE
    if not token_file.exists():
        storage = open_storage(data_dir, None)
        try:
            secret = storage.create_token(f"dev-release-{os.getpid()}", ["publish", "promote", "yank", "rollout",
                                                                       "keys", "read"])
        finally:
            storage.close()
        from qx_common.fs import atomic_write

        atomic_write(token_file, secret + "\n", mode=0o600)
    port = parse_listen(args.listen)[1]
    url = f"http://{args.listen}"
    log.step("development update server (keys in " + str(args.keys) + " — development keys, never for shipped hosts)")
    log.step(f"publish a build: .venv/bin/qx-release --server {url} --token-file {token_file} "
             "publish --channel stable build/")
    log.step(f"an image built on these keys (make image, no TUF_ROOT) looks for updates at http://10.0.2.2:8400/ "
             f"(this machine, seen from make boot's guest); from elsewhere put server_url = \"http://<this host>:{port}/\" "
             "into the host's /var/lib/quantix/config/update.toml; then on the host: qx-update check")
    return run(["serve", "--listen", args.listen, "--data-dir", str(data_dir),
                "--refresh-interval", args.refresh_interval])


def _check_root_keys(data_dir: Path, root_keys_dir: Path | None) -> None:
    """A server set up from an offline root refuses to start while a root private key is in its data
    directory (someone copied it there); a development setup, whose root keys are here by design, says so."""
    from qx_update_server.repository import Repository

    repo = Repository(data_dir, root_keys_dir=root_keys_dir)
    found = repo.root_private_keys()
    if found and repo.root_offline():
        raise EnvironmentError_(
            f"--data-dir {data_dir}: holds a root private key ({found[0]}); this repository's root keys are "
            "offline and must never be on the server",
            hint="move the file to the offline media (or destroy it if it is a copy), then start again")
    if found:
        log.step(f"WARNING: development setup — the root private keys are on this server ({found[0].parent}); "
                 "for production set up with offline root keys: qx-update-server init (docs/update-format.md §2.3)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qx-update-server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the HTTP service")
    s.add_argument("--listen", default="127.0.0.1:8400", help="ADDRESS:PORT (default 127.0.0.1:8400)")
    s.add_argument("--admin-listen", metavar="ADDRESS:PORT",
                   help="serve the admin API and page only here; --listen then serves only what hosts use "
                        "(metadata, targets, check-ins, /healthz), so it can face the internet")
    s.add_argument("--data-dir", type=Path, required=True, help="repository, keys and database live here")
    s.add_argument("--database", metavar="URL",
                   help="where tokens, releases, audit log and fleet live: postgresql://USER:PASSWORD@HOST:PORT/DB "
                        "or sqlite:///PATH (default: SQLite in the data dir)")
    s.add_argument("--root-keys-dir", type=Path, help="where the root keys are (default DATA_DIR/root-keys)")
    s.add_argument("--max-upload", default=str(4 << 30), help="largest accepted release file, bytes (default 4 GiB)")
    s.add_argument("--refresh-interval", default="600",
                   help=f"seconds between checks that re-sign expiring metadata ({MIN_REFRESH:g}-{MAX_REFRESH:g}, "
                        "default 600)")
    s.add_argument("--max-connections", default=str(serving.MAX_CONNECTIONS),
                   help="open connections at most; beyond, those idle longest are closed (default %(default)s)")
    s.add_argument("--header-timeout", default=str(serving.HEADER_TIMEOUT),
                   help="seconds a client has to send a request's headers (default %(default)s)")
    s.add_argument("--idle-timeout", default=str(serving.IDLE_TIMEOUT),
                   help="seconds without a byte while a request body is sent (default %(default)s)")
    s.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) to serve HTTPS with; needs --tls-key")
    s.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    s.add_argument("--tls-self-signed", action="store_true",
                   help="serve HTTPS with DATA_DIR/tls/cert.pem, made on the first start (fingerprint printed)")
    scopes_help = "scopes (what each allows):\n" + "\n".join(f"  {k:<8} {v}" for k, v in SCOPE_HELP.items())
    t = sub.add_parser("token", help="API tokens: create, list, revoke", description=scopes_help,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tsub = t.add_subparsers(dest="tcmd", required=True)

    def storage_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", type=Path, required=True)
        sp.add_argument("--database", metavar="URL", help="the same storage URL as serve's --database")

    tc = tsub.add_parser("create", help="create a token and print its secret on stdout (shown once; id on stderr)",
                         description=scopes_help, formatter_class=argparse.RawDescriptionHelpFormatter)
    storage_args(tc)
    tc.add_argument("--name", required=True, help="unique among tokens not revoked, e.g. ci-publish")
    tc.add_argument("--scopes", required=True, help=f"comma separated: {','.join(SCOPES)}")
    tc.add_argument("--expires-days", help="the token stops working after this many days (default: never)")
    tc.add_argument("--host", metavar="HOST_ID", help="a checkin token that may report only this host")
    tl = tsub.add_parser("list", help="every token: id, name, scopes, created, expires, last used, revoked")
    storage_args(tl)
    tl.add_argument("--json", action="store_true")
    tr = tsub.add_parser("revoke", help="revoke a token (by id or name) at once")
    storage_args(tr)
    tr.add_argument("token", help="the token's id (tok_…) or name")
    i = sub.add_parser("init", help="set the repository up from an offline root and the online keys "
                                    "(qx-release keys init --offline DIR made both)")
    i.add_argument("--data-dir", type=Path, required=True)
    i.add_argument("--root", type=Path, required=True,
                   help="the offline directory's root.json (its N.root.json files are read next to it)")
    i.add_argument("--online-keys", type=Path, required=True,
                   help="the offline directory's online-keys/ (timestamp, snapshot, targets private keys)")
    k = sub.add_parser("keys", help="online keys for a root signed offline")
    ksub = k.add_subparsers(dest="kcmd", required=True)
    ka = ksub.add_parser("add-online", help="install the new online keys of a root made with qx-release keys "
                                            "sign-root --new-online-keys, before that root is pushed")
    ka.add_argument("--data-dir", type=Path, required=True)
    ka.add_argument("--root", type=Path, required=True, help="the offline directory's newest root.json")
    ka.add_argument("--online-keys", type=Path, required=True, help="the offline directory's online-keys/")
    d = sub.add_parser("dev", help="development: a local server on the keys make image made (build/keys); "
                                   "set up on first use, with a release token file; then serve (make update-server)")
    d.add_argument("--keys", type=Path, required=True, help="the development key directory (build/keys)")
    d.add_argument("--data-dir", type=Path, required=True, help="the server's data (build/update-server)")
    d.add_argument("--listen", default="127.0.0.1:8400", help="ADDRESS:PORT (default 127.0.0.1:8400)")
    d.add_argument("--refresh-interval", default="600", help=argparse.SUPPRESS)
    h = sub.add_parser("host", help="host identities")
    hsub = h.add_subparsers(dest="hcmd", required=True)
    hf = hsub.add_parser("forget", help="unbind a host's key (a reinstalled host binds a new one at its next check-in)")
    storage_args(hf)
    hf.add_argument("host_id")
    return p


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "init":
        from qx_update_server.repository import Repository  # tuf only when needed

        if not args.online_keys.is_dir():
            raise UserError(f"--online-keys {args.online_keys}: not a directory",
                            hint="give the online-keys/ directory that qx-release keys init --offline wrote")
        repo = Repository(check_data_dir(args.data_dir))
        version = repo.setup_offline(args.root, args.online_keys)
        log.step(f"repository set up in {args.data_dir} (root version {version}; root keys stay offline)")
        return 0
    if args.cmd == "dev":
        return _dev(args)
    if args.cmd == "keys":
        from qx_update_server.repository import Repository

        added = Repository(check_data_dir(args.data_dir)).add_online_keys(args.root, args.online_keys)
        log.step(f"online keys: {len(added)} added" + (f" ({', '.join(k[:12] for k in added)})" if added else "")
                 + "; now push the root: qx-release keys push-root --offline DIR")
        return 0
    if args.cmd in ("token", "host"):
        if args.database is None:
            check_data_dir(args.data_dir)
        storage = open_storage(args.data_dir, args.database)
        try:
            return _manage(args, storage)
        finally:
            storage.close()
    host, port = parse_listen(args.listen)
    max_upload = int(_number("--max-upload", args.max_upload, 1, 1 << 40, default=4 << 30, integer=True,
                             unit=" bytes"))
    refresh = _number("--refresh-interval", args.refresh_interval, MIN_REFRESH, MAX_REFRESH, default=600,
                      unit=" seconds")
    max_conn = int(_number("--max-connections", args.max_connections, 16, 1_000_000, integer=True,
                           default=serving.MAX_CONNECTIONS))
    header_timeout = _number("--header-timeout", args.header_timeout, 0.5, 600, default=serving.HEADER_TIMEOUT,
                             unit=" seconds")
    idle_timeout = _number("--idle-timeout", args.idle_timeout, 0.5, 3600, default=serving.IDLE_TIMEOUT,
                           unit=" seconds")
    data_dir = check_data_dir(args.data_dir)
    admin = parse_listen(args.admin_listen, "--admin-listen") if args.admin_listen else None
    tls_files = _tls(args, [host] + ([admin[0]] if admin else []))
    if admin == (host, port):
        raise UserError("--admin-listen: must differ from --listen", hint="e.g. --admin-listen 127.0.0.1:8401")
    sock = serving.bind(host, port)  # before anything else: "port in use" is said at once, nothing started
    sockets = [sock]
    admin_address: tuple[str, int | None] | None = None
    if admin:
        sockets.append(serving.bind(*admin, flag="--admin-listen"))

    _check_root_keys(data_dir, args.root_keys_dir)
    from qx_update_server.app import create_app  # imported late: token management should not pay for it
    backend = serving.backend_sockets(len(sockets))  # the app behind the front; the admin one is last
    try:
        if admin:
            # the app tells the admin listener's requests by the backend socket they arrive on
            admin_address = backend.admin_address
        app = create_app(data_dir, database=args.database, root_keys_dir=args.root_keys_dir,
                         max_upload=max_upload, refresh_interval=refresh, admin_address=admin_address)
    except BaseException:
        backend.close()
        raise
    where = f"data in {data_dir}" + (f", database {redact_url(args.database)}" if args.database else "")
    scheme = "https" if tls_files else "http"
    log.step(f"qx-update-server on {scheme}://{args.listen}"
             + (f" (public), admin on {scheme}://{args.admin_listen}" if admin else "") + f" ({where})")
    serving.serve(app, sockets, backend, header_timeout=header_timeout, idle_timeout=idle_timeout,
                  max_connections=max_conn, tls=tls_files, metadata=app.state.metadata_files)
    return 0


main = entry(run)

if __name__ == "__main__":
    main()
