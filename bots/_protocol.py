"""Framing of messages between the engine and its bot workers.

A frame is a 4-byte big-endian length followed by that many bytes of JSON (orjson). Both
sides exchange plain dicts only: the engine never unpickles anything a worker sends.

Messages (``op``):

engine → worker: ``init`` (policy), ``exec`` (one execution), ``source`` (code the worker
asked for), ``fhir_result`` (reply to a FHIR call), ``stop``.
worker → engine: ``ready``, ``need_source``, ``fhir`` (a FHIR call), ``done`` (the result).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import orjson

from fhirbots.bots.errors import BotError

__all__ = [
    "HEADER",
    "ChannelClosedError",
    "FrameTooLargeError",
    "decode",
    "encode",
    "read_frame",
    "write_frame",
]

HEADER = struct.Struct(">I")
"""Length prefix of every frame."""


class ChannelClosedError(BotError, EOFError):
    """The other end closed the channel."""


class FrameTooLargeError(BotError, ValueError):
    """A frame exceeded the agreed maximum size."""


def encode(message: dict[str, Any], default: Any = None) -> bytes:
    """One frame holding ``message``."""
    body = orjson.dumps(message, default=default)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    """The message of a frame body."""
    message = orjson.loads(body)
    if not isinstance(message, dict):
        raise ValueError("a frame must hold a JSON object")
    return message


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise ChannelClosedError("channel closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_bytes: int) -> dict[str, Any]:
    """Blocking read of one message from file descriptor ``fd`` (worker side)."""
    (size,) = HEADER.unpack(_read_exactly(fd, HEADER.size))
    if size > max_bytes:
        raise FrameTooLargeError(f"frame of {size} bytes exceeds {max_bytes}")
    return decode(_read_exactly(fd, size))


def write_frame(fd: int, data: bytes) -> None:
    """Blocking write of one encoded frame to ``fd`` (worker side)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
