"""R-Precision on constructed similarity matrices with known answers (engine/rprecision.py)."""

import pytest
import torch

from engine.errors import ConfigError
from engine.rprecision import check_captions, r_precision, top1_hits, wilson_interval


def test_all_hits_and_all_misses():
    sim = torch.eye(4) + 0.1
    assert r_precision(sim, [0, 1, 2, 3]).value == 1.0
    assert r_precision(sim, [1, 2, 3, 0]).hits == 0


def test_known_share_with_repeated_captions_across_runs():
    # Two seeds per caption: runs 0-1 caption 0, runs 2-3 caption 1, run 4 caption 2.
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.3, 0.1], [0.1, 0.8, 0.0], [0.5, 0.4, 0.0], [0.0, 0.1, 0.7]])
    r = r_precision(sim, [0, 0, 1, 1, 2])
    assert (r.hits, r.runs, r.captions) == (3, 5, 3)
    assert r.value == pytest.approx(0.6)


def test_tie_counts_as_miss():
    sim = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.6, 0.6], [0.3, 0.3, 0.3]])
    assert top1_hits(sim, [0, 1, 2]) == [False, False, False]
    # One ulp above the tie is a hit.
    sim[0, 0] = torch.nextafter(torch.tensor(0.5), torch.tensor(1.0))
    assert top1_hits(sim, [0, 1, 2])[0]


def test_single_run_is_scored_with_a_wide_interval():
    r = r_precision(torch.tensor([[0.2, 0.9]]), [1])
    assert (r.hits, r.runs, r.value) == (1, 1, 1.0)
    assert r.ci_low < 0.25 and r.ci_high == 1.0


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(75, 100)
    assert (lo, hi) == pytest.approx((0.6570, 0.8245), abs=1e-4)  # the textbook Wilson 95 % for 75/100
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_duplicate_or_single_caption_refused():
    with pytest.raises(ConfigError, match="repeats caption 1"):
        check_captions(["a red cube", "a blue sphere", "a red cube"])
    with pytest.raises(ConfigError, match="at least two"):
        r_precision(torch.tensor([[1.0]]), [0], ["a red cube"])


def test_bad_matrices_refused():
    with pytest.raises(ValueError, match="outside"):
        top1_hits(torch.zeros(1, 2), [2])
    with pytest.raises(ValueError, match="non-finite"):
        top1_hits(torch.tensor([[float("nan"), 0.0]]), [0])
    with pytest.raises(ValueError, match="runs x captions"):
        top1_hits(torch.zeros(3), [0])
