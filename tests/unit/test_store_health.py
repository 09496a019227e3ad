"""A Qdrant server that stops answering turns the store (and so `/ready`) not ready, and ready again when
it answers. No Qdrant server can run here, so the server is a stand-in that answers the two read-only
calls the client makes (`GET /` and `GET /collections`) in Qdrant's JSON shapes; what is under test is
the store's real `AsyncQdrantClient` and its probe, not Qdrant."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from indexer.store import QdrantStore, StoreError

ANSWERS = {
    "/": {"title": "qdrant - vector search engine", "version": "1.15.0"},
    "/collections": {"result": {"collections": []}, "status": "ok", "time": 0.0},
}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = json.dumps(ANSWERS.get(self.path.split("?")[0], {"status": {"error": "not found"}})).encode()
        self.send_response(200 if self.path.split("?")[0] in ANSWERS else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class StandIn:
    """Start and stop answering on one fixed loopback port."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def down(self) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
        self._server = None


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    if server._server is not None:
        server.down()


async def _until(condition: Callable[[], bool], seconds: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not condition():
        if loop.time() - start > seconds:
            raise AssertionError(f"not within {seconds} s")
        await asyncio.sleep(0.02)


async def test_readiness_follows_the_server_going_away_and_coming_back(stand_in: StandIn) -> None:
    stand_in.up()
    store = QdrantStore("docs", url=stand_in.url, probe_every_s=0.1)
    await store.start()
    try:
        assert store.ready
        stand_in.down()
        await _until(lambda: not store.ready, 3.0)
        stand_in.up()
        await _until(lambda: store.ready, 3.0)
    finally:
        await store.close()
    assert not store.ready


async def test_a_server_that_never_answered_is_named_at_start_and_leaves_nothing_open(stand_in: StandIn) -> None:
    store = QdrantStore("docs", url=stand_in.url, probe_every_s=0.1)
    with pytest.raises(StoreError, match=f"cannot reach Qdrant at {stand_in.url}"):
        await store.start()
    assert not store.ready and store._client is None and store._watch is None
    stand_in.up()  # a later start works
    await store.start()
    assert store.ready
    await store.close()


async def test_a_local_folder_needs_no_probe(tmp_path: object) -> None:
    store = QdrantStore("docs", path=str(tmp_path), probe_every_s=0.01)
    await store.start()
    await asyncio.sleep(0.05)
    assert store.ready and store._watch is None
    await store.close()
