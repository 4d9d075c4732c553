"""Relay one guest TCP connection to a service on the host's loopback: ``relay.py HOST PORT``.

QEMU's user-mode network spawns this once per guest connection to a ``guestfwd`` address
(``qx_build.qemu.Machine.guest_services``) and talks to it on stdin/stdout. It connects only to the
loopback address it is given, so the guest reaches exactly one host service and nothing else.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    if not ipaddress.ip_address(host).is_loopback:
        print(f"relay.py: {host} is not a loopback address", file=sys.stderr)
        return 2
    sock = socket.create_connection((host, port), timeout=30)
    sock.settimeout(None)

    def guest_to_host() -> None:
        try:
            while data := os.read(0, 1 << 16):
                sock.sendall(data)
        except OSError:
            pass
        finally:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    threading.Thread(target=guest_to_host, daemon=True).start()
    try:
        while data := sock.recv(1 << 16):
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
