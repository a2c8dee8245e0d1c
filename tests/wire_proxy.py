"""A byte-counting HTTP/1.1 proxy for the loopback deployment test (not a test module).

It sits between the SuperNodes and the SuperLink's Fleet API, forwards every byte
unchanged and records each request/response pair (path, header and body sizes, body
bytes). :func:`attribute` then decodes the Fleet protobufs to assign every body to a
(phase, round, direction): a node's n-th ``train`` (``evaluate``) message is round n.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass

from flwr.proto.fleet_pb2 import (
    PullMessagesRequest,
    PullMessagesResponse,
    PushMessagesRequest,
)
from flwr.proto.message_pb2 import PullObjectRequest, PushObjectRequest


@dataclass
class Exchange:
    """One HTTP request and its response as they crossed the proxy."""

    path: str
    request_head: int
    request_body: bytes
    response_head: int = 0
    response_body: bytes = b""


async def _read_http(reader: asyncio.StreamReader) -> tuple[bytes, bytes, bytes]:
    """(start line + headers, body, raw bytes) of the next HTTP/1.1 message."""
    head = await reader.readuntil(b"\r\n\r\n")
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        raw, body = bytearray(), bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            raw += size_line + chunk
            body += chunk[:-2]
            if size == 0:
                break
        return head, bytes(body), head + bytes(raw)
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return head, body, head + body


class CountingProxy:
    """Forward 127.0.0.1:<port> to 127.0.0.1:<upstream>, recording every exchange."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def start(self) -> CountingProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the counting proxy did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _handle(self, client_r, client_w) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        pending: collections.deque[Exchange] = collections.deque()

        async def requests() -> None:
            while True:
                head, body, raw = await _read_http(client_r)
                path = head.split(b" ", 2)[1].decode()
                pending.append(Exchange(path, len(head), body))
                up_w.write(raw)
                await up_w.drain()

        async def responses() -> None:
            while True:
                head, body, raw = await _read_http(up_r)
                ex = pending.popleft()
                ex.response_head, ex.response_body = len(head), body
                with self._lock:
                    self.exchanges.append(ex)
                client_w.write(raw)
                await client_w.drain()

        tasks = [asyncio.ensure_future(requests()), asyncio.ensure_future(responses())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for w in (client_w, up_w):
                w.close()


def _tree_ids(tree) -> list[str]:
    ids = [tree.object_id]
    for child in tree.children:
        ids += _tree_ids(child)
    return ids


def attribute(exchanges: list[Exchange]) -> dict[tuple[str, int, str], dict[str, int]]:
    """Bytes per (message type, round, "uplink"/"downlink"): protobuf bodies,
    requests and HTTP header bytes, as defined in ``fedrot.strategies.traffic``."""
    out: dict[tuple[str, int, str], dict[str, int]] = collections.defaultdict(
        lambda: {"bytes": 0, "requests": 0, "headers": 0}
    )
    rounds: collections.Counter = collections.Counter()
    objects: dict[tuple[str, str], tuple[str, int, str]] = {}

    def add(key, body: int, head: int) -> None:
        out[key]["bytes"] += body
        out[key]["requests"] += 1
        out[key]["headers"] += head

    for ex in exchanges:
        name = ex.path.rsplit("/", 1)[-1]
        if name == "push-messages":
            req = PushMessagesRequest.FromString(ex.request_body)
            phase = req.messages_list[0].metadata.message_type
            rounds[(req.node.node_id, phase, "uplink")] += 1
            key = (phase, rounds[(req.node.node_id, phase, "uplink")], "uplink")
            for oid in _tree_ids(req.message_object_trees[0]):
                objects[("uplink", oid)] = key
            add(key, len(ex.request_body), ex.request_head)
        elif name == "push-object":
            req = PushObjectRequest.FromString(ex.request_body)
            add(
                objects[("uplink", req.object_id)],
                len(ex.request_body),
                ex.request_head,
            )
        elif name == "pull-messages":
            resp = PullMessagesResponse.FromString(ex.response_body)
            if not resp.messages_list:
                continue
            node = PullMessagesRequest.FromString(ex.request_body).node.node_id
            phase = resp.messages_list[0].metadata.message_type
            rounds[(node, phase, "downlink")] += 1
            key = (phase, rounds[(node, phase, "downlink")], "downlink")
            for oid in _tree_ids(resp.message_object_trees[0]):
                objects[("downlink", oid)] = key
            add(key, len(ex.response_body), ex.request_head)
        elif name == "pull-object":
            req = PullObjectRequest.FromString(ex.request_body)
            add(
                objects[("downlink", req.object_id)],
                len(ex.response_body),
                ex.request_head,
            )
    return dict(out)
