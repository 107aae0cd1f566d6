"""nodeapps/vcm/deadlines.py against a plain dict scanned for its minimum (the reference model): order,
moves, cancellation, ties, and the bound on left-behind heap entries."""
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeapps.vcm.deadlines import DeadlineQueue


def test_earliest_follows_sets_moves_and_discards_on_a_fake_clock():
    q = DeadlineQueue()
    assert q.earliest() is None and q.pop_due(1e9) == []
    q.set("a", 5.0)
    q.set("b", 3.0)
    q.set("c", 4.0)
    assert q.earliest() == 3.0
    q.set("b", 6.0)              # moved later: "c" is next
    assert q.earliest() == 4.0 and q.deadline("b") == 6.0
    q.discard("c")               # cancelled
    q.discard("c")               # twice is harmless
    assert q.earliest() == 5.0 and "c" not in q and len(q) == 2
    q.set("a", 1.0)              # moved earlier
    assert q.pop_due(0.5) == [] and q.earliest() == 1.0
    assert q.pop_due(5.9) == ["a"]
    assert q.earliest() == 6.0 and q.pop_due(6.0) == ["b"] and q.earliest() is None and len(q) == 0


def test_ties_come_out_in_the_order_they_were_set_and_a_rearmed_key_once():
    q = DeadlineQueue()
    for key in ("x", "y", "z"):
        q.set(key, 2.0)
    q.set("x", 9.0)
    q.set("x", 2.0)              # set again: now last among the ties
    assert q.pop_due(2.0) == ["y", "z", "x"]
    assert q.pop_due(10.0) == []


def test_nan_is_refused_and_infinity_orders_last():
    q = DeadlineQueue()
    with pytest.raises(ValueError):
        q.set("k", math.nan)
    assert len(q) == 0 and q.earliest() is None
    q.set("never", math.inf)
    q.set("soon", 1.0)
    assert q.pop_due(1e300) == ["soon"] and q.earliest() == math.inf


def test_left_behind_entries_stay_bounded_whatever_the_churn():
    q = DeadlineQueue()
    rng = random.Random(3)
    for i in range(20000):
        q.set(i % 50, rng.uniform(0, 1000))    # 50 keys moved 400 times each
    assert len(q) == 50
    assert len(q._heap) <= 2 * 50 + 64 + 1 and q.rebuilds > 0
    for i in range(50):
        q.discard(i)
    assert len(q._heap) <= 64 + 1 and q.earliest() is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "discard", "pop"]), st.integers(0, 7),
                          st.integers(0, 40)), max_size=120))
def test_matches_a_dict_scanned_for_its_minimum(ops):
    q, model = DeadlineQueue(), {}
    order = {}   # key -> sequence of its latest effective set, for ties
    sequence = 0
    for op, key, t in ops:
        if op == "set":
            if model.get(key) != t:
                sequence += 1
                order[key] = sequence
            model[key] = float(t)
            q.set(key, float(t))
        elif op == "discard":
            model.pop(key, None)
            q.discard(key)
        else:
            due = sorted((k for k, when in model.items() if when <= t), key=lambda k: (model[k], order[k]))
            assert q.pop_due(float(t)) == due
            for k in due:
                del model[k]
        assert q.earliest() == min(model.values(), default=None)
        assert len(q) == len(model) and len(q._heap) <= 2 * len(model) + 64 + 1
