"""RCBC targets the model cannot make sense of are refused, and no non-finite action reaches an env."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from faultkit import error_line
from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.config import RunConfig, load_config
from mtm.errors import ConfigError
from mtm.policy import MTMPolicy, NonFiniteActionError, load_model
from mtm.training.loop import train

from conftest import TINY_REACHER


@pytest.mark.parametrize("option,value,message", [
    ("--target-return", "inf", "the target return must be a finite number, got inf"),
    ("--target-return", "nan", "the target return must be a finite number, got nan"),
    ("--target-fraction", "nan", "the target fraction must be a finite number, got nan"),
    ("--target-fraction", "-inf", "the target fraction must be a finite number, got -inf"),
    ("--target-fraction", "1e30", "the target fraction 1e+30 is far outside the training returns"),
    ("--target-return", "-1e30", "the target return -1e+30 is far outside the training returns"),
])
def test_eval_refuses_targets_the_model_cannot_use(reacher_run, monkeypatch, option, value, message):
    import mtm.rollout

    def no_rollouts(*args, **kwargs):
        raise AssertionError("episodes ran with an unusable target")

    monkeypatch.setattr(mtm.rollout.EpisodeRunner, "run", no_rollouts)
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(reacher_run), "--episodes", "2",
                                       "--no-progress", option, value])
    assert message in error_line(result)


def test_targets_within_range_are_still_accepted(reacher_run):
    ck = load_checkpoint(reacher_run)
    seen = ck.metadata["returns"]["episode_return"]
    model = load_model(ck)
    assert MTMPolicy(model, ck.metadata, target_fraction=-100.0).target_return < seen["min"]
    assert MTMPolicy(model, ck.metadata, target_fraction=100.0).target_return > seen["max"]
    assert MTMPolicy(model, ck.metadata, target_return=seen["max"] + 50 * (seen["max"] - seen["min"])).mode == "rcbc"
    with pytest.raises(ConfigError, match="far outside"):
        MTMPolicy(model, ck.metadata, target_fraction=101.0)


def test_a_non_finite_action_never_reaches_the_env(reacher_run):
    ck = load_checkpoint(reacher_run)
    model = load_model(ck)
    with torch.no_grad():
        next(p for p in model.parameters() if p.dim() == 2).fill_(float("nan"))  # a broken checkpoint
    policy = MTMPolicy(model, ck.metadata, num_envs=2)
    policy.reset()
    with pytest.raises(NonFiniteActionError, match=r"the model produced a non-finite action for environment "
                                                   r"slot\(s\) \[0, 1\] at step 0; nothing was sent"):
        policy.act(np.zeros((2, 10), np.float32))

    healthy = MTMPolicy(load_model(ck), ck.metadata, num_envs=1)
    healthy.reset()
    obs = np.zeros((1, 10), np.float32)
    obs[0, 3] = np.nan
    with pytest.raises(NonFiniteActionError, match="the observations given to it were not finite"):
        healthy.act(obs)


def test_eval_of_a_checkpoint_with_nan_weights_is_one_line(reacher_run, tmp_path):
    import shutil

    import safetensors.torch

    broken = tmp_path / "broken"
    shutil.copytree(load_checkpoint(reacher_run).path, broken)
    weights = safetensors.torch.load_file(broken / "model.safetensors")
    weights = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
    safetensors.torch.save_file(weights, broken / "model.safetensors")
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(broken), "--episodes", "2", "--no-progress"])
    assert "the model produced a non-finite action" in error_line(result)


def test_train_refuses_a_non_finite_eval_target_before_training(reacher_run, tmp_path):
    data = load_checkpoint(reacher_run).metadata["dataset"]["path"]
    cfg = load_config(RunConfig, None, TINY_REACHER + [f"data.path={data}", f"train.run_dir={tmp_path / 'run'}",
                                                       "train.steps=4", "train.eval_every=2",
                                                       "train.eval_target_fraction=.nan"])
    with pytest.raises(ConfigError, match="train.eval_policy.target_fraction: the target fraction must be a finite number"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()
