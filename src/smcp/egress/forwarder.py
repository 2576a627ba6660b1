"""In-sandbox forwarder: loopback TCP → the egress proxy's unix socket. Standard library only.

Most HTTP clients take a proxy as `http://host:port` and cannot use a unix socket,
so inside a sandbox whose server has an egress allowlist the platform runs

    python3 -I -S /run/smcp/forwarder.py --listen 127.0.0.1:3128 \
        --socket /run/smcp/egress.sock -- <the server's own argv>

It binds the loopback port first (so the proxy is there before the server's first
line runs), forks, and the *parent* execs the server: the server keeps the pid
bubblewrap watches, owns stdin/stdout, and when it exits the sandbox's pid
namespace — this forwarder included — goes with it. The child copies bytes both
ways between each accepted TCP connection and a new connection to the unix
socket; all policy lives in the host-side proxy, so this process is plumbing,
not a boundary. It needs no network beyond the sandbox's own `lo`, which
`bwrap --unshare-net` brings up. Without a command it just serves (tests use that).
"""

from __future__ import annotations

import _socket
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    import socket

# Only what binding needs is loaded before the server's exec (the C `_socket`, not
# `socket`, which drags in enum and selectors); asyncio and socket are imported in
# the forwarder's own process, after the fork, so the server does not wait for them.

CHUNK = 64 * 1024


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await src.read(CHUNK)
            if not data:
                break
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError, RuntimeError):
        dst.close()


async def _handle(path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    import asyncio

    try:
        ureader, uwriter = await asyncio.open_unix_connection(path)
    except OSError as exc:
        sys.stderr.write(f"smcp-forwarder: egress proxy unreachable: {exc}\n")
        writer.close()
        return
    try:
        await asyncio.gather(_pipe(reader, uwriter), _pipe(ureader, writer))
    finally:
        writer.close()
        uwriter.close()


async def _serve(listener: socket.socket, path: str) -> None:
    import asyncio

    listener.setblocking(False)
    server = await asyncio.start_server(lambda r, w: _handle(path, r, w), sock=listener)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    listen, path, command = "127.0.0.1:3128", "/run/smcp/egress.sock", []
    args = list(argv)
    if "--" in args:
        cut = args.index("--")
        args, command = args[:cut], args[cut + 1 :]
    while args:
        flag = args.pop(0)
        if flag == "--listen" and args:
            listen = args.pop(0)
        elif flag == "--socket" and args:
            path = args.pop(0)
        else:
            sys.exit(f"smcp-forwarder: unexpected argument {flag!r}")
    host, _, port = listen.rpartition(":")
    raw = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    raw.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    raw.bind((host, int(port)))
    raw.listen(128)
    if command:
        if os.fork() != 0:
            raw.close()
            try:
                os.execvp(command[0], command)
            except OSError as exc:
                sys.stderr.write(f"smcp: cannot run {command[0]!r}: {exc}\n")
                os._exit(127)
        # The child: leave the server's stdio alone (its stdout EOF is how the host
        # sees it exit); keep stderr for our own complaints.
        try:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.close(null)
        except OSError:
            os.close(0)
            os.close(1)
    import asyncio
    import socket

    listener = socket.socket(fileno=raw.detach())
    try:
        asyncio.run(_serve(listener, path))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main(sys.argv[1:])
