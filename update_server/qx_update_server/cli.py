"""``qx-update-server``: run the service, and manage API tokens on the server's machine.

    qx-update-server serve --listen 127.0.0.1:8400 --data-dir /srv/qx-updates
    qx-update-server token create --data-dir DIR --name ci --scopes publish,promote,read

Tokens, release records, the audit log and the fleet live in SQLite in the data dir by default; with
``--database postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` they live in PostgreSQL instead (tables
created on first start; the password may come from PGPASSWORD). Give ``token create`` the same
--database as ``serve``. The repository and the keys stay in the data dir either way.
"""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

from qx_common import log
from qx_common.cli import entry
from qx_common.errors import UserError
from qx_update_server.storage import SCOPES, open_storage, redact_url


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        p = int(port)
        if not sep or not 0 < p < 65536:
            raise ValueError
    except ValueError as e:
        raise UserError(f"--listen: {value!r} is not ADDRESS:PORT", hint="e.g. --listen 127.0.0.1:8400") from e
    return host, p


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qx-update-server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the HTTP service")
    s.add_argument("--listen", default="127.0.0.1:8400", help="ADDRESS:PORT (default 127.0.0.1:8400)")
    s.add_argument("--data-dir", type=Path, required=True, help="repository, keys and database live here")
    s.add_argument("--database", metavar="URL",
                   help="where tokens, releases, audit log and fleet live: postgresql://USER:PASSWORD@HOST:PORT/DB "
                        "or sqlite:///PATH (default: SQLite in the data dir)")
    s.add_argument("--root-keys-dir", type=Path, help="where the root keys are (default DATA_DIR/root-keys)")
    s.add_argument("--max-upload", type=int, default=4 << 30, help="largest accepted file, bytes")
    s.add_argument("--refresh-interval", type=float, default=600.0,
                   help="seconds between checks that re-sign expiring metadata")
    t = sub.add_parser("token", help="API tokens")
    tsub = t.add_subparsers(dest="tcmd", required=True)
    tc = tsub.add_parser("create", help="create a token and print it (shown once)")
    tc.add_argument("--data-dir", type=Path, required=True)
    tc.add_argument("--database", metavar="URL", help="the same storage URL as serve's --database")
    tc.add_argument("--name", required=True)
    tc.add_argument("--scopes", required=True, help=f"comma separated: {','.join(SCOPES)}")
    return p


def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "token":
        storage = open_storage(args.data_dir, args.database)
        print(storage.create_token(args.name, [s.strip() for s in args.scopes.split(",") if s.strip()]))
        storage.close()
        return 0
    host, port = parse_listen(args.listen)
    import uvicorn  # imported late: token management should not pay for it

    from qx_update_server.app import create_app
    app = create_app(args.data_dir, database=args.database, root_keys_dir=args.root_keys_dir,
                     max_upload=args.max_upload, refresh_interval=args.refresh_interval)
    where = f"data in {args.data_dir}" + (f", database {redact_url(args.database)}" if args.database else "")
    log.step(f"qx-update-server on http://{args.listen} ({where})")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0


main = entry(run)

if __name__ == "__main__":
    main()
