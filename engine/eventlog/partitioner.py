"""Key-to-partition mapping, identical to Kafka's default partitioner.

Both adapters use it, so a key lands on the same partition number in the embedded log and in
Kafka (and in a Java producer), which keeps per-resource order when a deployment moves.
"""

from __future__ import annotations

__all__ = ["murmur2", "partition_for"]

_SEED = 0x9747B28C  # Kafka's murmur2 seed (org.apache.kafka.common.utils.Utils.murmur2)
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash of ``data``, as a signed 32-bit integer."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = (h * _M) & _MASK32
        h ^= k
    tail = length % 4
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str, partitions: int) -> int:
    """Partition of ``key`` in a topic with ``partitions`` partitions (Kafka-compatible)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
