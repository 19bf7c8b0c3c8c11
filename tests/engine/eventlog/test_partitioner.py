from __future__ import annotations

import random

from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from fhirbots.engine.eventlog.partitioner import murmur2, partition_for


def test_murmur2_matches_kafka_java_vectors() -> None:
    # Values from Kafka's UtilsTest.testMurmur2 (the Java client).
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107


def test_murmur2_matches_aiokafka_for_random_bytes() -> None:
    rng = random.Random(7)
    for _ in range(300):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        assert murmur2(data) & 0xFFFFFFFF == aiokafka_murmur2(data) & 0xFFFFFFFF


def test_partition_for_is_stable_and_in_range() -> None:
    keys = [f"default/Patient/{i}" for i in range(1000)]
    parts = [partition_for(k, 8) for k in keys]
    assert parts == [partition_for(k, 8) for k in keys]
    assert set(parts) == set(range(8))
    assert partition_for("x", 1) == 0
