"""Properties of the link model and the parameter parsers, over generated inputs."""
from hypothesis import given, settings
from hypothesis import strategies as st

from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.model import DirectionModel
from nodeapps.linkemu.overrides import parse_override
from nodeapps.linkemu.params import LinkParams
from nodeapps.linkemu.profiles import make_config

MS = 1_000_000

arrivals = st.lists(st.tuples(st.integers(0, 5 * MS), st.integers(60, 1514)), min_size=1, max_size=60).map(
    lambda items: sorted(items))


@settings(max_examples=60, deadline=None)
@given(arrivals, st.floats(0, 50), st.floats(0, 10), st.floats(0, 30), st.sampled_from([None, 1.0, 20.0]),
       st.sampled_from([None, 3, 20]), st.integers(0, 2 ** 32))
def test_model_invariants(items, delay, jitter, loss, rate, queue, seed):
    params = LinkParams(delay_ms=delay, jitter_ms=jitter, loss=loss, rate_mbit=rate,
                        queue_packets=queue if rate else None)
    model = DirectionModel(params, seed=seed)
    releases = [(t, model.offer(t, size), size) for t, size in items]
    c = model.counters
    assert c.offered == len(items) == c.accepted + c.lost + c.queue_drops
    kept = [(t, r, size) for t, r, size in releases if r is not None]
    assert [r for _, r, _ in kept] == sorted(r for _, r, _ in kept)          # order kept
    low = max(0.0, delay - jitter) * MS
    for t, r, size in kept:
        assert r >= t + low - 1                                             # never faster than the wire
        if rate:
            assert r >= t + size * 8 * 1000 / rate                          # at least its own serialisation
    if rate:  # back-to-back frames cannot beat the rate: total time covers total serialisation
        total = sum(size for _, _, size in kept)
        if kept and not jitter:
            assert kept[-1][1] - items[0][0] >= total * 8 * 1000 / rate + delay * MS - 1


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=200, deadline=None)
@given(text)
def test_override_parser_never_raises_anything_else(value):
    try:
        parse_override(value)
    except LinkConfigError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["delay", "jitter", "loss", "rate", "queue_packets", "queue_bytes", "burst_loss",
                        "jitter_correlation", "reorder", "distribution", "ge_p"]),
       st.one_of(text, st.integers(-10 ** 6, 10 ** 6), st.floats(allow_nan=True, allow_infinity=True),
                 st.booleans(), st.none()))
def test_any_value_is_accepted_or_a_one_line_error(key, value):
    try:
        make_config(**{key: value})
    except LinkConfigError as exc:
        assert "\n" not in str(exc)
