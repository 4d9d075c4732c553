"""Command line of qx-node: ``serve`` (the daemon) and ``bootcheck`` (the boot marker/health wait)."""

from __future__ import annotations

import argparse
from pathlib import Path

from qx_common import hostpaths
from qx_common.cli import entry
from qx_node import settings as s


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qx-node", description="Quantix OS host daemon")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTPS API")
    serve.add_argument("--listen", default=s.DEFAULT_LISTEN, help="ADDR:PORT (default %(default)s)")
    serve.add_argument("--libvirt-uri", default=s.DEFAULT_LIBVIRT_URI, help="default %(default)s")
    serve.add_argument("--state-dir", type=Path, default=s.DEFAULT_STATE_DIR,
                       help="api-token and tls/ live here (default %(default)s)")
    serve.add_argument("--pool-dir", type=Path, default=s.DEFAULT_POOL_DIR,
                       help="directory of the default storage pool (default %(default)s)")
    serve.add_argument("--pool-name", default=s.DEFAULT_POOL_NAME, help="default %(default)s")
    serve.add_argument("--virt-type", choices=("kvm", "qemu"), default=None,
                       help="domain type of new VMs (default: kvm when available, else qemu)")
    serve.add_argument("--console-ready-dir", type=Path, default=None,
                       help="where the console reports ready; checked by /health (default on a Quantix OS host: "
                            f"{s.DEFAULT_CONSOLE_READY_DIR}; elsewhere the console is not checked)")
    serve.add_argument("--no-console-check", action="store_true", help="do not require a running console")

    boot = sub.add_parser("bootcheck", help="wait for /health and print boot markers")
    boot.add_argument("--url", default="https://127.0.0.1:8443/health")
    boot.add_argument("--cacert", type=Path, default=hostpaths.node_cert(s.DEFAULT_STATE_DIR),
                      help="CA to verify the node's certificate (default %(default)s)")
    boot.add_argument("--timeout", type=float, default=300.0)
    boot.add_argument("--expect-console", action="append", default=[], metavar="TTY",
                      help="also wait (up to 180 s) until the console on TTY reports ready; repeatable")
    return p


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.command == "bootcheck":
        from qx_node.bootcheck import report

        return report(args.url, args.timeout, cafile=args.cacert, expect_consoles=tuple(args.expect_console))

    host, port = s.parse_listen(args.listen)
    ready_dir, unchecked = s.console_check(args.console_ready_dir, args.no_console_check)
    settings = s.Settings(
        host=host,
        port=port,
        libvirt_uri=args.libvirt_uri,
        state_dir=s.prepare_dir("--state-dir", args.state_dir),
        console_ready_dir=ready_dir,
        console_unchecked_reason=unchecked,
        pool_dir=args.pool_dir,
        pool_name=args.pool_name,
        virt_type=args.virt_type,
    )
    from qx_node.serve import serve

    serve(settings)
    return 0


main = entry(_main)
