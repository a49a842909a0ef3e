"""The default RCBC target: the best training return that is not an outlier (Tukey's fence)."""

import numpy as np
import pytest

from mtm.checkpoint import load_checkpoint
from mtm.data.returns import typical_best_return
from mtm.evaluation.rollouts import format_report
from mtm.policy import MTMPolicy, load_model


def test_a_return_only_a_lucky_start_allows_is_left_out():
    # Reacher pixels in small: returns around 33, one episode that started on the target scores 50.
    returns = np.r_[np.linspace(30.0, 36.0, 29), 50.0]
    q1, q3 = np.quantile(returns, [0.25, 0.75])
    assert 50.0 > q3 + 1.5 * (q3 - q1) > 36.0
    assert typical_best_return(returns) == (36.0, 1)


def test_without_outliers_it_is_the_best_return_whatever_the_sign():
    assert typical_best_return(np.linspace(-40.0, -3.0, 20)) == (-3.0, 0)
    hopper_like = np.r_[np.full(50, 3300.0), np.linspace(900.0, 3200.0, 70)]  # falls give a long low tail
    assert typical_best_return(hopper_like) == (3300.0, 0)


def test_few_episodes_have_no_outliers():
    assert typical_best_return(np.array([1.0, 2.0, 3.0, 100.0])) == (100.0, 0)
    assert typical_best_return(np.r_[np.full(9, 10.0), 12.0]) == (10.0, 1)  # 10 episodes: quartiles count


def test_checkpoints_record_it_and_the_policy_asks_for_it_by_default(reacher_run):
    ck = load_checkpoint(reacher_run)
    seen = ck.metadata["returns"]["episode_return"]
    assert seen["min"] <= seen["typical_max"] <= seen["max"] and seen["outliers_above"] >= 0
    model = load_model(ck)

    meta = {**ck.metadata, "returns": {**ck.metadata["returns"],
                                       "episode_return": {**seen, "typical_max": seen["mean"], "outliers_above": 2}}}
    default = MTMPolicy(model, meta)
    assert default.target_return == pytest.approx(seen["mean"])
    assert (default.target_rule, default.target_outliers) == ("typical best", 2)
    best = MTMPolicy(model, meta, target_fraction=1.0)  # still the way to ask for the best
    assert best.target_return == pytest.approx(seen["max"]) and best.target_rule == "fraction"
    assert MTMPolicy(model, meta, target_return=-5.0).target_rule == "given"

    old = {**ck.metadata, "returns": {**ck.metadata["returns"],
                                      "episode_return": {k: seen[k] for k in ("min", "mean", "max")}}}
    assert MTMPolicy(model, old).target_return == pytest.approx(seen["max"])  # older checkpoints: the best


def test_the_report_says_when_returns_were_left_out():
    report = {"env_id": "mtm/ReacherPixels-v0", "episodes": 3, "mode": "rcbc", "target_return": 36.0,
              "target_outliers_left_out": 1, "return_mean": 30.0, "return_std": 1.0, "length_mean": 50.0,
              "env_steps_per_s": 100.0, "num_envs": 3}
    first = format_report(report).splitlines()[0]
    assert "target return 36.0 (the best training return that is not an outlier; 1 above it left out" in first
    assert "--target-fraction 1" in first
    assert "outlier" not in format_report({**report, "target_outliers_left_out": 0}).splitlines()[0]
