#!/usr/bin/env python3
"""The gateway's published socket, held outside nginx so that a gateway restart closes no port.

    listen_socket.py hold [ADDRESS:]PORT NAME   bind and listen on the port, then hand the listening
                                                socket to whoever asks on the abstract unix socket NAME
    listen_socket.py exec NAME -- COMMAND...    take the listening socket from NAME, then exec COMMAND
                                                (nginx) with it inherited (NGINX="<fd>;")
    listen_socket.py check NAME                 exit 0 when NAME hands out a listening socket (the
                                                holder's health check)

Why: with one nginx in one container, `docker compose restart gateway` leaves nothing listening on the
published port between the old nginx's exit and the new one's start, and a caller that connects then is
refused. Here the socket belongs to a process in a container of its own (compose's `gateway-port`),
whose network namespace the gateway container shares. nginx gets the same socket at every start,
through nginx's own mechanism for binary upgrades (the NGINX environment variable), and a connection
that arrives while no nginx runs waits in the socket's accept queue until the next one accepts it.

The socket's address must equal nginx's `listen` (GATEWAY_LISTEN) for nginx to use it rather than
bind its own. NAME is an abstract unix socket (no file): it lives in the network namespace, so only
the processes sharing it (the holder's container and the gateway's) can ask, and the holder hands the
socket only to a process of its own uid. Standard library only: the gateway image has python3-minimal.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time

# The accept queue until the first nginx takes the socket, which then sets its own (`listen ... backlog=`,
# 511 by default); the connections made while no nginx runs wait there. The kernel caps it at net.core.somaxconn.
BACKLOG = 4096
FD = 3  # the descriptor nginx inherits: the first after stdin, stdout and stderr
NO_HOLDER = 3  # the exit status when nobody holds NAME here (the gateway's watcher stops nginx on it alone)
TIMEOUT_S = 10.0  # exec: how long to wait for the holder, e.g. while its container starts
# check: a running holder answers at once (it shares the asker's network); refused for this long means nobody
# holds the name. Short, since the gateway's watcher waits this long before it stops a gateway left behind.
CHECK_TIMEOUT_S = 0.5


def parse_address(text: str) -> tuple[int, str, int]:
    """`8080`, `0.0.0.0:8080`, `127.0.0.1:8080` or `[::]:8080` -> (family, host, port), as nginx's listen reads them."""
    host, sep, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not a port or ADDRESS:PORT (like 8080 or 127.0.0.1:8080)")
    if not sep:
        return socket.AF_INET, "0.0.0.0", int(port)  # nginx's `listen 8080` is *:8080, IPv4
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, host[1:-1], int(port)
    return socket.AF_INET, host, int(port)


def hold(address: str, name: str) -> None:
    family, host, port = parse_address(address)
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what nginx sets on its own listeners
    if family == socket.AF_INET6:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as nginx's [::]:port
    listener.bind((host, port))
    listener.listen(BACKLOG)
    # Non-blocking, as nginx's own listeners are: nginx takes an inherited socket as it is, and with a blocking
    # one a worker that lost the race for a connection to another worker blocks in accept() until the next
    # connection reaches it, and every connection it already holds waits with it (a request hung over 70 s).
    # The flag belongs to the socket, so every copy handed out has it.
    listener.setblocking(False)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0" + name)
    server.listen(16)
    # As a container's PID 1 a signal without a handler is ignored: docker stop sends the image's SIGQUIT.
    for stop in (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT):
        signal.signal(stop, lambda *_: sys.exit(0))
    print(f"listen_socket: holding {address} for {name!r}", file=sys.stderr, flush=True)
    while True:
        conn, _ = server.accept()
        with conn:
            pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
            if uid != os.getuid():
                print(f"listen_socket: refused pid {pid}: uid {uid} is not {os.getuid()}", file=sys.stderr, flush=True)
                continue
            try:
                socket.send_fds(conn, [b"fd"], [listener.fileno()])
            except OSError as error:  # the asker went away: the next one asks again
                print(f"listen_socket: pid {pid}: {error}", file=sys.stderr, flush=True)


def take(name: str, timeout_s: float = TIMEOUT_S) -> int:
    """The held listening socket's descriptor (inheritable), asked of the holder at NAME."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout_s)
                conn.connect("\0" + name)
                _, fds, _, _ = socket.recv_fds(conn, 16, 1)
            break
        except (ConnectionRefusedError, FileNotFoundError) as error:
            if time.monotonic() > deadline:
                print(f"listen_socket: no holder answers on {name!r} ({error}): is the gateway-port service running, "
                      "and does this container share its network (network_mode)?", file=sys.stderr)
                sys.exit(NO_HOLDER)
            time.sleep(0.2)
    if not fds:
        raise SystemExit(f"listen_socket: the holder on {name!r} sent no socket (is it running as this uid?)")
    os.set_inheritable(fds[0], True)
    os.set_blocking(fds[0], False)  # hold() set it already: set here too, so that nginx never gets a blocking one
    return fds[0]


def check(name: str) -> None:
    fd = take(name, timeout_s=CHECK_TIMEOUT_S)
    with socket.socket(fileno=fd) as held:
        if not held.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise SystemExit(f"listen_socket: {name!r} handed out a socket that is not listening")
        print(f"listen_socket: {name!r} holds a listening socket on {held.getsockname()}")


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "hold":
        hold(argv[1], argv[2])
    elif len(argv) == 2 and argv[0] == "check":
        check(argv[1])
    elif len(argv) >= 4 and argv[0] == "exec" and argv[2] == "--":
        fd = take(argv[1])
        if fd != FD:
            os.dup2(fd, FD)  # dup2 leaves FD inheritable
            os.close(fd)
        os.environ["NGINX"] = f"{FD};"
        os.execvp(argv[3], argv[3:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
