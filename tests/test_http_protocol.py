"""The API's HTTP protocol turns Nagle's algorithm off even on a socket bound the way uvicorn's
multi-process supervisor binds it (protocol number 0), where asyncio leaves it on."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.http_protocol import NoDelayH11Protocol

pytestmark = pytest.mark.unit


async def _app(scope, receive, send) -> None:  # noqa: ANN001 - a bare ASGI app
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _nodelay_seen_by(protocol: type[H11Protocol]) -> list[int]:
    """TCP_NODELAY of each connection the server accepted, read right after `protocol` set it up."""
    seen: list[int] = []

    class Probe(protocol):  # type: ignore[misc, valid-type]
        def connection_made(self, transport) -> None:  # noqa: ANN001
            super().connection_made(transport)
            seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as Config.bind_socket
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app, http=Probe, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/").text == "ok"
            assert client.get("/").text == "ok"  # the same kept-alive connection
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()
    return seen


def test_nodelay_protocol_sets_tcp_nodelay_on_a_presupplied_socket() -> None:
    assert _nodelay_seen_by(NoDelayH11Protocol) == [1]


def test_uvicorns_own_protocol_leaves_nagle_on_there() -> None:
    """Why the protocol exists: without it the option stays off on such a socket."""
    assert _nodelay_seen_by(H11Protocol) == [0]
