"""uvicorn's HTTP protocol with Nagle's algorithm off on every accepted TCP connection.

With `--workers N` (and under gunicorn) uvicorn binds the listening socket itself and hands it
to the worker processes with its protocol number left at 0; asyncio turns TCP_NODELAY on only
for sockets that report IPPROTO_TCP, so Nagle stays on. A response written in two pieces then
waits for the client's delayed ACK: every request after the first on a kept-alive connection
took ~40-50 ms instead of ~5 ms. Setting the option here works whichever way the socket was
made. Use it with `uvicorn ... --http api.http_protocol:NoDelayH11Protocol`."""

from __future__ import annotations

import asyncio
import socket

from uvicorn.protocols.http.h11_impl import H11Protocol


class NoDelayH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
