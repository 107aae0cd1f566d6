"""Anti-replay window (RFC 4303 §3.4.3, Appendix A): check before ICV, commit after."""
import random

import pytest

from nodeapps.esp import ReplayError, ReplayWindow


def accept(window, seq_lo):
    seq = window.check(seq_lo)
    window.commit(seq)
    return seq


def reason(window, seq_lo):
    with pytest.raises(ReplayError) as info:
        window.check(seq_lo)
    return info.value.reason


def test_in_order_then_replayed():
    w = ReplayWindow()
    for seq in range(1, 10):
        assert accept(w, seq) == seq
    assert reason(w, 9) == "replayed"
    assert reason(w, 1) == "replayed"
    assert w.top == 9


def test_zero_is_never_valid_without_esn():
    assert reason(ReplayWindow(), 0) == "too_old"


def test_reordered_within_window_accepted_once():
    w = ReplayWindow(64)
    accept(w, 100)
    accept(w, 98)
    accept(w, 99)
    assert w.top == 100
    assert reason(w, 98) == "replayed"
    accept(w, 40)  # 100 - 40 = 60 < 64


def test_window_edges():
    w = ReplayWindow(64)
    accept(w, 200)
    accept(w, 200 - 63)  # the left edge is inside
    assert reason(w, 200 - 64) == "too_old"  # one past it is not
    accept(w, 201)  # window slides by one: now 138..201
    assert reason(w, 137) == "too_old"
    accept(w, 138)
    assert reason(w, 138) == "replayed"


def test_big_jump_clears_the_bitmap():
    w = ReplayWindow(32)
    for seq in range(1, 33):
        accept(w, seq)
    accept(w, 1000)
    assert w.bitmap == 1
    assert reason(w, 1000 - 32) == "too_old"
    accept(w, 1000 - 31)


def test_check_does_not_move_the_window():
    # A packet whose ICV then fails is only checked, never committed.
    w = ReplayWindow()
    accept(w, 5)
    assert w.check(1000) == 1000
    assert w.top == 5
    accept(w, 6)
    accept(w, 1000)  # still new: the unverified one left no trace


@pytest.mark.parametrize("size", [32, 33, 64, 100, 1024])
def test_configurable_size_against_reference_model(size):
    rng = random.Random(size)
    w = ReplayWindow(size)
    seen = set()
    top = 0
    for _ in range(3000):
        seq = max(1, top + rng.randint(-size - 5, 8))
        expect_ok = seq not in seen and (seq > top or top - seq < size)
        try:
            w.check(seq)
        except ReplayError:
            assert not expect_ok, seq
            continue
        assert expect_ok, seq
        if rng.random() < 0.9:  # some packets fail their ICV and are never committed
            w.commit(seq)
            seen.add(seq)
            top = max(top, seq)


@pytest.mark.parametrize("size", [0, 31, -1, 64.0, "64"])
def test_too_small_window_refused(size):
    with pytest.raises(ValueError):
        ReplayWindow(size)


def test_esn_infers_high_half_across_wrap():
    w = ReplayWindow(64, esn=True)
    w.commit(0xFFFFFFF0)
    assert accept(w, 5) == (1 << 32) + 5  # wrapped: high half becomes 1
    assert accept(w, 0xFFFFFFF8) == 0xFFFFFFF8  # late packet from before the wrap, still in window
    assert reason(w, 0xFFFFFFF8) == "replayed"
    assert w.check(0) == 1 << 32  # with ESN, low half 0 is a valid number after the wrap


def test_esn_case_a_and_far_old():
    w = ReplayWindow(64, esn=True)
    w.commit((3 << 32) + 1000)
    assert w.check(1000 - 63) == (3 << 32) + 937
    # Below the window bottom the number is read as belonging to the next 2**32 block (Appendix A2.2).
    assert w.check(10) == (4 << 32) + 10


def test_esn_nothing_before_zero():
    w = ReplayWindow(64, esn=True)
    assert reason(w, 0) == "too_old"
    assert reason(w, 0xFFFFFFFF) == "too_old"  # would need high half -1
    assert w.check(1) == 1
