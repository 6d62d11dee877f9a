"""LatencyHistogram: quantiles within the documented relative error of numpy's, merges exact,
JSON round trips, empty and mismatched schemes refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crashgate.harness.histogram import LatencyHistogram

# latencies log-uniform over the whole range the histogram resolves (1 us .. 1000 s)
latency = st.floats(-6, 3).map(lambda e: float(10 ** e))
samples = st.lists(latency, min_size=1, max_size=300)


def hist(xs: list[float], **kw: float) -> LatencyHistogram:
    h = LatencyHistogram(**kw)
    h.extend(xs)
    return h


@settings(max_examples=300, deadline=None)
@given(samples, st.lists(st.floats(0, 1), min_size=1, max_size=5),
       st.sampled_from([0.01, 0.02, 0.005]))
def test_quantiles_within_alpha_of_numpys(xs: list[float], qs: list[float],
                                          alpha: float) -> None:
    h = hist(xs, alpha=alpha)
    for q in qs:
        exact = float(np.quantile(xs, q, method="lower"))
        got = h.quantile(q)
        assert got is not None
        assert abs(got - exact) <= alpha * exact * (1 + 1e-9), (q, got, exact)


@settings(max_examples=200, deadline=None)
@given(samples, samples)
def test_merge_equals_the_histogram_of_all_samples(a: list[float], b: list[float]) -> None:
    merged = hist(a)
    merged.merge(hist(b))
    both = hist(a + b)
    assert merged == both
    assert merged.buckets == both.buckets and merged.count == len(a) + len(b)
    assert merged.min == min(a + b) and merged.max == max(a + b)
    assert merged.mean == both.mean


@settings(max_examples=100, deadline=None)
@given(samples)
def test_json_round_trip(xs: list[float]) -> None:
    h = hist(xs)
    doc = json.loads(json.dumps(h.to_json()))
    back = LatencyHistogram.from_json(doc)
    assert back == h and back.quantile(0.99) == h.quantile(0.99)
    assert len(doc["buckets"]) == len(h.buckets) <= len(xs)   # sparse


def test_empty() -> None:
    h = LatencyHistogram()
    assert (h.count, h.quantile(0.5), h.min, h.max, h.mean) == (0, None, None, None, None)
    assert LatencyHistogram.from_json(h.to_json()) == h
    h.merge(LatencyHistogram())
    assert h.count == 0


def test_outside_the_range_is_clamped_but_min_max_exact() -> None:
    h = hist([0.0, 5000.0])
    assert h.min == 0.0 and h.max == 5000.0
    assert (h.quantile(0), h.quantile(1)) == (0.0, 5000.0)   # the extremes are exact
    h.extend([0.0, 5000.0])                         # the middle ranks are clamped
    assert h.quantile(0.34) == pytest.approx(1e-6, rel=0.011)
    assert h.quantile(0.67) == pytest.approx(1000.0, rel=0.011)


def test_merging_different_schemes_is_refused() -> None:
    with pytest.raises(ValueError, match="different bucket schemes"):
        hist([0.1]).merge(hist([0.1], alpha=0.02))


def test_unknown_scheme_version_is_refused() -> None:
    doc = hist([0.1]).to_json()
    doc["scheme"]["version"] = 99
    with pytest.raises(ValueError, match="not this version"):
        LatencyHistogram.from_json(doc)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_samples_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="finite number of seconds"):
        LatencyHistogram().record(bad)


def test_bad_quantile_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        hist([0.1]).quantile(99)
