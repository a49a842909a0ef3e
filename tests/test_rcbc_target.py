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


def test_a_populous_better_mode_is_not_called_outliers():
    # hopper-medium-v5 + hopper-expert-v5 trained together (a D4RL-style medium-expert mixture): the
    # mixture's fence lies between the files' returns. 313 medium returns ~600-1300, 119 expert ones:
    # 77 of them ~3200-3320, 42 that fell early: the expert's are a mode of the data, not lucky starts.
    rng = np.random.default_rng(0)
    medium = rng.uniform(600.0, 1320.0, 313)
    expert = np.r_[rng.uniform(3200.0, 3300.0, 76), 3323.0, rng.uniform(930.0, 2500.0, 42)]
    mixture = np.r_[medium, expert]
    q1, q3 = np.quantile(mixture, [0.25, 0.75])
    assert (mixture > q3 + 1.5 * (q3 - q1)).sum() > 0.05 * len(mixture)  # Tukey alone would drop them
    target, left_out = typical_best_return(mixture)
    assert target == 3323.0 and left_out == 0
    # ... and an outlier above that mode is still one.
    assert typical_best_return(np.r_[mixture, 5000.0]) == (3323.0, 1)


def test_few_returns_above_the_fence_stay_outliers_whatever_their_share():
    # 2 of 20 (10 %) above the fence: fewer than 10 returns are no population of their own.
    assert typical_best_return(np.r_[np.linspace(30.0, 36.0, 18), 50.0, 51.0]) == (36.0, 2)


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
