"""Frame encoding between the engine and its workers."""

from __future__ import annotations

import os

import pytest

from fhirbots.bots._protocol import (
    HEADER,
    ChannelClosedError,
    FrameTooLargeError,
    decode,
    encode,
    read_frame,
    write_frame,
)


def test_round_trip_over_a_pipe() -> None:
    read_fd, write_fd = os.pipe()
    try:
        message = {"op": "exec", "input": {"a": [1, 2.5, None, "é"]}}
        write_frame(write_fd, encode(message))
        assert read_frame(read_fd, 1024) == message
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_oversized_frame_and_closed_channel() -> None:
    read_fd, write_fd = os.pipe()
    try:
        write_frame(write_fd, encode({"data": "x" * 100}))
        with pytest.raises(FrameTooLargeError):
            read_frame(read_fd, 10)
    finally:
        os.close(read_fd)
    read_fd2, write_fd2 = os.pipe()
    os.write(write_fd2, HEADER.pack(10) + b"{}")
    os.close(write_fd2)
    with pytest.raises(ChannelClosedError):
        read_frame(read_fd2, 100)
    os.close(read_fd2)
    os.close(write_fd)


def test_only_objects_are_messages() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        decode(b"[1]")
    assert decode(encode({"a": 1})[HEADER.size :]) == {"a": 1}
