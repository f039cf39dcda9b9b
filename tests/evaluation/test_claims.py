"""Claims of a model card re-checked on new data: the words say which held and which failed."""

from __future__ import annotations

from medsight.evaluation.claims import ECE_TOLERANCE, check_claims
from medsight.tasks.spec import Claim


def _claim(metric: str, value: float, low: float | None = None, high: float | None = None, **kw):
    return Claim(metric=metric, value=value, low=low, high=high, measured_on="group-held-out", **kw)


def test_a_floor_fails_only_when_the_new_interval_lies_below_the_claimed_bound():
    specificity = _claim("specificity", 0.98, 0.95, 0.99, operating_point="high_sensitivity")
    sensitivity = _claim("sensitivity", 0.969, 0.951, 0.98, operating_point="high_sensitivity")
    observed = {
        ("specificity", "high_sensitivity"): {"value": 0.628, "low": 0.58, "high": 0.674},
        ("sensitivity", "high_sensitivity"): {"value": 0.979, "low": 0.96, "high": 0.99},
    }
    failed, held = check_claims([specificity, sensitivity], observed)
    assert failed.holds is False and held.holds is True
    assert failed.words == (
        "specificity at high_sensitivity 0.628 (95% CI 0.580-0.674) against the card's "
        "0.980 (95% CI 0.950-0.990): FAILS (0.352 below)"
    )
    assert held.words.endswith("holds (0.010 above)")
    # an interval reaching the claimed lower bound is not shown worse: it holds
    close = {("specificity", "high_sensitivity"): {"value": 0.93, "low": 0.90, "high": 0.95}}
    assert check_claims([specificity], close)[0].holds is True


def test_ece_fails_beyond_its_tolerance_and_an_unmeasurable_claim_is_said_so():
    ece = _claim("ece", 0.03)
    assert check_claims([ece], {("ece", None): {"value": 0.03 + ECE_TOLERANCE}})[0].holds
    worse = check_claims([ece], {("ece", None): {"value": 0.114}})[0]
    assert worse.holds is False and "ECE 0.114 against the card's 0.030: FAILS" in worse.words
    dice = _claim("dice", 0.9, 0.88, 0.92, segment="lesion")
    missing = check_claims([dice], {})[0]
    assert missing.holds is None and missing.words == "dice of lesion: not measurable on these data"


def test_a_point_is_checked_against_the_target_it_was_locked_for():
    from medsight.evaluation.report import locked_target
    from medsight.tasks.spec import OperatingPoint

    def point(**fields):
        return OperatingPoint(output="pneumonia", threshold=0.41, **fields)

    assert locked_target(point(target_sensitivity=0.9, sensitivity=0.97)) == 0.9
    # versions from before target_sensitivity: the target their note states, not what they got
    note = "target sensitivity 0.95 demonstrated: sensitivity 0.969 (95% CI 0.951-0.980)"
    assert locked_target(point(sensitivity=0.9685, note=note)) == 0.95
    missed = (
        "target not demonstrated: sensitivity 0.967 (95% CI 0.833-0.994) has a lower bound "
        "below 0.95"
    )
    assert locked_target(point(sensitivity=0.9667, note=missed)) == 0.95
    assert locked_target(point(sensitivity=0.9)) == 0.9
