"""Key-to-partition mapping, identical to Kafka's default partitioner.

Both adapters use it, so a key lands on the same partition number in the embedded log and in
Kafka (and in a Java producer), which keeps per-resource order when a deployment moves.
"""

from __future__ import annotations

import functools
import struct

__all__ = ["murmur2", "partition_for"]

PARTITION_CACHE_SIZE = 65_536
"""Keys remembered with their partition: a resource is usually written more than once."""

_SEED = 0x9747B28C  # Kafka's murmur2 seed (org.apache.kafka.common.utils.Utils.murmur2)
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash of ``data``, as a signed 32-bit integer."""
    length = len(data)
    m, mask = _M, _MASK32
    h = (_SEED ^ length) & mask
    whole = length // 4
    for k in struct.unpack_from(f"<{whole}I", data):
        k = (k * m) & mask
        k ^= k >> 24
        h = ((h * m) & mask) ^ ((k * m) & mask)
    tail = length % 4
    base = whole * 4
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@functools.lru_cache(maxsize=PARTITION_CACHE_SIZE)
def partition_for(key: str, partitions: int) -> int:
    """Partition of ``key`` in a topic with ``partitions`` partitions (Kafka-compatible)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
