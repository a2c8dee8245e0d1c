"""Bytes a Flower 1.41 message costs on the SuperNode <-> SuperLink link.

Flower turns a Message into a tree of content-addressed objects (Message, RecordDict,
ArrayRecord, Array, ArrayChunk of at most 5 MiB, MetricRecord, ConfigRecord) and
moves them over HTTP with one protobuf request per object. This module rebuilds
those exact protobuf messages and sums their ``ByteSize()``; it does not send
anything, so it works the same in simulation (where nothing is serialized) and in
deployment.

What is counted
---------------
* A reply (uplink): the ``PushMessagesRequest`` body (message metadata + object
  tree) plus one ``PushObjectRequest`` body per distinct object, i.e. exactly the
  HTTP request bodies a SuperNode posts to ``push-messages`` and ``push-object``.
* An instruction (downlink): the ``PullMessagesResponse`` body that delivers it plus
  one ``PullObjectResponse`` body per distinct object, i.e. the HTTP response bodies
  a SuperNode receives from ``pull-messages`` and ``pull-object``.
* ``payload_bytes``: ``sum(len(Array.data))`` over the message's arrays.
* ``requests``: HTTP requests the transfer takes (1 + objects for a reply;
  1 + objects + 1 confirmation for an instruction).

Not counted: HTTP headers (about 840 B per request in 1.41, mostly the request
signature and public key, so multiply ``requests`` to include them), the small
request bodies of pulls and confirmations, response bodies of pushes, polling and
heartbeats, and TLS framing. An object the SuperLink already stores (e.g. an array
a client returns unchanged) is pushed only once by Flower but counted here.

Examples
--------
>>> from flwr.app import ArrayRecord, Message, RecordDict
>>> from flwr.supercore.task_identity import TaskIdentity
>>> TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
>>> import numpy as np
>>> msg = Message(RecordDict({"arrays": ArrayRecord([np.zeros(1000, np.float32)])}),
...               dst_node_id=7, message_type="train")
>>> wb = instruction_bytes(msg)
>>> wb.payload_bytes, wb.requests
(4128, 7)
>>> wb.message_bytes > wb.payload_bytes
True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from flwr.app import Message, RecordDict
from flwr.common.serde import message_to_proto
from flwr.proto.fleet_pb2 import PullMessagesResponse, PushMessagesRequest
from flwr.proto.message_pb2 import PullObjectResponse, PushObjectRequest
from flwr.proto.node_pb2 import Node
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    get_object_tree,
)

from ..records import rebuild_message

__all__ = ["Traffic", "instruction_bytes", "reply_bytes"]

#: Length of the SuperLink's push session id (``str(uuid4())``).
_SESSION_ID_LEN = 36


@dataclass(frozen=True)
class Traffic:
    """Bytes and requests of one or more messages (see the module docstring).

    Attributes
    ----------
    message_bytes
        Protobuf bytes of the HTTP bodies that carry the message(s).
    payload_bytes
        ``sum(len(Array.data))`` over the message(s)' arrays.
    requests
        HTTP requests the transfer takes.
    """

    message_bytes: int = 0
    payload_bytes: int = 0
    requests: int = 0

    def __add__(self, other: Traffic) -> Traffic:
        """Sum of two counts."""
        return Traffic(
            self.message_bytes + other.message_bytes,
            self.payload_bytes + other.payload_bytes,
            self.requests + other.requests,
        )


def _payload_bytes(msg: Message) -> int:
    if not msg.has_content():
        return 0
    return sum(
        len(arr.data)
        for rec in msg.content.array_records.values()
        for arr in rec.values()
    )


def _without_content(msg: Message) -> Message:
    """``msg`` without content, with a message id of the length Flower assigns.

    Flower sets a message's id to its 64-hex-digit object id when it is stored;
    simulation uses shorter UUIDs, so the id is normalised to 64 characters.
    """
    meta = copy.copy(msg.metadata)
    meta.__dict__["_message_id"] = "0" * 64
    if msg.has_error():
        return rebuild_message(meta, error=msg.error)
    return rebuild_message(meta, content=RecordDict())


def reply_bytes(msg: Message) -> Traffic:
    """Bytes a SuperNode sends to deliver the reply ``msg`` (uplink).

    Parameters
    ----------
    msg : flwr.app.Message
        A reply (content or error), as the ClientApp returned it or as the server
        received it.

    Returns
    -------
    Traffic
        ``PushMessagesRequest`` + one ``PushObjectRequest`` per distinct object.
    """
    node = Node(node_id=msg.metadata.src_node_id)
    objects = get_all_nested_objects(msg)
    head = PushMessagesRequest(
        node=node,
        messages_list=[message_to_proto(_without_content(msg))],
        message_object_trees=[get_object_tree(msg)],
        clientapp_runtime_list=[1.0],
    ).ByteSize()
    empty = PushObjectRequest(
        node=node,
        run_id=msg.metadata.run_id,
        object_id="0" * 64,
        session_id="x" * _SESSION_ID_LEN,
    ).ByteSize()
    body = sum(empty + _bytes_field(len(obj.deflate())) for obj in objects.values())
    return Traffic(head + body, _payload_bytes(msg), 1 + len(objects))


def instruction_bytes(msg: Message) -> Traffic:
    """Bytes a SuperNode receives to fetch the instruction ``msg`` (downlink).

    Parameters
    ----------
    msg : flwr.app.Message
        An instruction, e.g. one returned by a strategy's ``configure_train``.

    Returns
    -------
    Traffic
        ``PullMessagesResponse`` + one ``PullObjectResponse`` per distinct object.
    """
    objects = get_all_nested_objects(msg)
    head = PullMessagesResponse(
        messages_list=[message_to_proto(_without_content(msg))],
        message_object_trees=[get_object_tree(msg)],
    ).ByteSize()
    empty = PullObjectResponse(object_found=True, object_available=True).ByteSize()
    body = sum(empty + _bytes_field(len(obj.deflate())) for obj in objects.values())
    return Traffic(head + body, _payload_bytes(msg), 2 + len(objects))


def _bytes_field(n: int) -> int:
    """Protobuf size of a non-empty ``bytes`` field of length ``n`` (tag < 16)."""
    size = 1 + n
    while True:
        size += 1
        n >>= 7
        if not n:
            return size
