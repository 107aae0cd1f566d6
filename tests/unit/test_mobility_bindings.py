"""Binding cache, sequence window, backoff and rate limits (RFC 6275 §9.5.1, §11.8)."""
import pytest
from hypothesis import given, strategies as st

from nodeapps.mobility.bindings import (
    BindingCache, Retransmitter, TokenBucket, UpdateRateLimit, sequence_newer, sequence_next,
)

HOA = b"\x20" + bytes(15)
COA = b"\x30" + bytes(15)


def test_sequence_window_modulo_2_16():
    assert sequence_newer(1, 0)
    assert sequence_newer(0, 65535)            # wraps
    assert sequence_newer(32767, 0)            # furthest "newer"
    assert not sequence_newer(32768, 0)        # last and the 32768 before it are not newer
    assert not sequence_newer(0, 0)
    assert not sequence_newer(65535, 0)
    assert sequence_next(65535) == 0


@given(st.integers(0, 65535), st.integers(0, 65535))
def test_sequence_window_is_antisymmetric(a, b):
    # Never both newer; exactly one when they differ by anything but half the space.
    assert not (sequence_newer(a, b) and sequence_newer(b, a))
    if a != b and (a - b) % 65536 != 32768:
        assert sequence_newer(a, b) or sequence_newer(b, a)


def test_cache_lifetime_and_sequence():
    cache = BindingCache()
    entry, previous = cache.update(HOA, COA, 10, 100.0, now=5.0, home_registration=True)
    assert previous is None and entry.expires_at == 105.0
    assert cache.sequence_acceptable(HOA, 10, 6.0) == (False, 10)
    assert cache.sequence_acceptable(HOA, 11, 6.0) == (True, 10)
    assert cache.get(HOA, 104.9) is entry
    assert cache.get(HOA, 105.0) is None             # expired entries are invisible ...
    assert cache.sequence_acceptable(HOA, 3, 105.0) == (True, None)
    assert cache.next_expiry() == 105.0
    assert cache.expire(104.0) == []
    assert cache.expire(105.0) == [entry] and len(cache) == 0  # ... and removed by expire()


def test_cache_capacity():
    cache = BindingCache(capacity=1)
    cache.update(HOA, COA, 1, 10, 0, home_registration=False)
    assert not cache.full(HOA) and cache.full(COA)


def test_retransmitter_doubles_to_max_then_gives_up():
    retx = Retransmitter(max_timeout=32.0)
    retx.start(0.0, 1.0)
    deadlines = [retx.deadline]
    while retx.backoff(retx.deadline):
        deadlines.append(retx.deadline)
    assert deadlines == [1, 3, 7, 15, 31, 63]
    assert not retx.active and retx.transmissions == 6


def test_retransmitter_keep_retrying_stays_at_max():
    retx = Retransmitter(max_timeout=4.0, keep_retrying=True)
    retx.start(0.0, 1.5)
    deadlines = [retx.deadline]
    for _ in range(5):
        assert retx.backoff(retx.deadline)
        deadlines.append(retx.deadline)
    assert deadlines == [1.5, 4.5, 8.5, 12.5, 16.5, 20.5]


def test_update_rate_limit_three_per_second():
    limit = UpdateRateLimit()
    for t in (0.0, 0.1, 0.2):
        assert limit.earliest(t) == t
        limit.record(t)
    assert limit.earliest(0.3) == 1.0
    assert limit.earliest(1.0) == 1.0


def test_token_bucket():
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.allow(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.allow(0.1) and not bucket.allow(0.1)   # one token per 100 ms
    assert sum(bucket.allow(10.0) for _ in range(10)) == 5  # refills to the burst, no more
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
