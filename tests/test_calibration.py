import numpy as np
import pytest

from ganomaly_edge.engine.calibration import Calibration, calibrate, check, normalise


def test_threshold_is_the_far_quantile_and_normalises_to_one():
    s = np.arange(1, 1001, dtype=float)  # 1..1000
    c = calibrate(s, far=0.01)
    assert isinstance(c, Calibration)  # typed, as the bundle holds it
    assert c.median == pytest.approx(500.5)
    assert c.threshold_raw == 991.0  # 99th percentile, 'higher' method
    assert c.val_far == pytest.approx(0.009)
    assert normalise(c.threshold_raw, c) == pytest.approx(1.0)
    assert c.normalise(c.median) == pytest.approx(0.0)
    check(c.model_dump())  # the record a checkpoint keeps reads back


def test_far_controls_threshold():
    s = np.random.default_rng(0).normal(size=5000)
    t1, t5 = calibrate(s, 0.01)["threshold_raw"], calibrate(s, 0.05)["threshold_raw"]
    assert t1 > t5
    assert t1 == pytest.approx(2.326, abs=0.15) and t5 == pytest.approx(1.645, abs=0.1)


@pytest.mark.parametrize("bad,msg", [(np.ones(3), "at least"), (np.r_[np.ones(20), np.nan], "NaN"),])
def test_calibration_refuses_bad_input(bad, msg):
    with pytest.raises(ValueError, match=msg):
        calibrate(bad)


def test_an_inverted_or_infinite_calibration_is_refused():
    good = calibrate(np.arange(1, 101, dtype=float), far=0.05)
    check(good)
    with pytest.raises(ValueError, match="inverts"):
        check(dict(good, threshold_raw=good["median"] - 1.0))
    with pytest.raises(ValueError, match="finite"):
        check(dict(good, median=float("inf")))
    with pytest.raises(ValueError, match="scale must be positive"):
        check(dict(good, scale=0.0))


def test_constant_scores_still_give_a_positive_scale():
    c = calibrate(np.full(50, 3.0))
    assert c["scale"] > 0


def test_small_sets_extrapolate_the_tail_and_ignore_an_outlier():
    rng = np.random.default_rng(3)
    s = np.r_[rng.normal(0, 1, 149), 25.0]  # one odd normal image
    c = calibrate(s, far=0.01)
    assert c["method"] == "exponential-tail"
    # about the normal 99th percentile (2.33; from 150 images the estimate spreads 1.7-3.5
    # over seeds, and an exponential tail errs high on a normal), nowhere near the outlier
    assert 1.5 < c["threshold_raw"] < 5.0
    assert calibrate(rng.normal(0, 1, 2000), far=0.01)["method"] == "quantile"


@pytest.mark.parametrize("draw", [lambda r, n: r.exponential(1.0, n), lambda r, n: r.lognormal(0.0, 0.6, n),
                                  lambda r, n: r.chisquare(4, n)], ids=["exponential", "lognormal", "chi2"])
def test_small_sets_hold_the_target_rate_on_skewed_scores(draw):
    """Distances are skewed to the right. From 450 held-out images (too few to resolve 1 %), the
    threshold must still hold about 1 % on fresh images of the same kind; a normal tail fitted by
    median and MAD gives 3-10 % here."""
    rng = np.random.default_rng(7)
    fars = []
    for _ in range(20):
        c = calibrate(draw(rng, 450), far=0.01)
        assert c["method"] == "exponential-tail"
        fars.append(np.mean(draw(rng, 100_000) > c["threshold_raw"]))
    assert 0.005 < np.median(fars) < 0.016
    assert max(fars) < 0.03


def test_tail_rate_inside_the_sample_uses_the_quantile():
    s = np.arange(1, 31, dtype=float)  # 30 images, far 0.3: n * far < 10, yet wider than the fitted top 20 %
    c = calibrate(s, far=0.3)
    assert c["method"] == "quantile" and c["threshold_raw"] == np.quantile(s, 0.7, method="higher")
