"""One definition of how a policy acts (mtm.policy_config.PolicyConfig), used by mtm eval, the
policy, evaluation and training-time evaluation; the old train.eval_* keys keep loading."""

import dataclasses

import numpy as np
import pytest
from click.testing import CliRunner

from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.cli.eval_command import eval_command
from mtm.config import RunConfig, load_config, parse_yaml, save_config
from mtm.errors import ConfigError
from mtm.policy import MTMPolicy, load_model
from mtm.policy_config import POLICY_MODES, PREDICTION_TASK_NAMES, PolicyConfig


def test_modes_are_listed_once():
    assert POLICY_MODES == ("bc", "rcbc", "plan", "id")
    mode_option = next(p for p in eval_command.params if p.name == "mode")
    assert tuple(mode_option.type.choices) == POLICY_MODES


def test_prediction_tasks_and_policy_modes_are_named_once():
    from mtm.evaluation.predictions import PREDICTION_TASKS
    from mtm.model import ContinuousTokenizer
    from mtm.model.mlp import MLPPolicyModel
    from mtm.model.network import MTM, ModelConfig

    # The registry defines exactly the named tasks, so none is skipped or refused by a copy of the list.
    assert tuple(PREDICTION_TASKS) == PREDICTION_TASK_NAMES
    task_option = next(p for p in eval_command.params if p.name == "tasks")
    assert tuple(task_option.type.choices) == PREDICTION_TASK_NAMES
    # An MTM can do everything; an MLP baseline one mode and the task of the same name.
    assert MTM.policy_modes == POLICY_MODES and MTM.prediction_tasks == PREDICTION_TASK_NAMES
    tokenizers = {m: ContinuousTokenizer(1, [0.0], [1.0], name=m) for m in ("states", "returns", "actions")}
    for kind, mode in (("mlp_bc", "bc"), ("mlp_rcbc", "rcbc")):
        mlp = MLPPolicyModel(ModelConfig(kind=kind), tokenizers, window=2)
        assert mlp.policy_modes == mlp.prediction_tasks == (mode,)
        assert mode in POLICY_MODES and mode in PREDICTION_TASK_NAMES


def test_train_section_holds_a_policy_config():
    cfg = load_config(RunConfig, None, ["train.eval_policy.mode=bc", "train.eval_policy.target_fraction=0.8",
                                        "train.eval_policy.action_history=false"])
    assert cfg.train.eval_policy == PolicyConfig(mode="bc", target_fraction=0.8, action_history=False)


@pytest.mark.parametrize("where", ["file", "set"])
def test_old_eval_keys_still_load(tmp_path, where):
    if where == "file":
        path = tmp_path / "old.yaml"
        path.write_text("train:\n  eval_mode: bc\n  eval_target_fraction: 0.5\n  eval_every: 10\n")
        cfg = load_config(RunConfig, path)
    else:
        cfg = load_config(RunConfig, None, ["train.eval_mode=bc", "train.eval_target_fraction=0.5"])
    assert (cfg.train.eval_policy.mode, cfg.train.eval_policy.target_fraction) == ("bc", 0.5)
    saved = parse_yaml(save_config(cfg, tmp_path / "config.yaml").read_text())["train"]
    assert "eval_mode" not in saved and saved["eval_policy"]["mode"] == "bc"


def test_old_and_new_keys_together_new_wins(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("train:\n  eval_mode: bc\n  eval_policy:\n    mode: rcbc\n")
    assert load_config(RunConfig, path).train.eval_policy.mode == "rcbc"


def test_old_key_with_a_bad_value_names_the_new_key():
    with pytest.raises(ConfigError, match=r"train\.eval_policy\.mode: expected one of 'auto', 'bc', 'rcbc'"):
        load_config(RunConfig, None, ["train.eval_mode=bcc"])


def test_both_targets_is_one_error_line():
    with pytest.raises(ConfigError, match="give one of them, not both"):
        load_config(RunConfig, None, ["train.eval_policy.target_return=10", "train.eval_policy.target_fraction=0.5"])


def test_policy_from_config_or_keywords_is_the_same(reacher_run):
    ck = load_checkpoint(reacher_run)
    model = load_model(ck)
    obs = np.random.default_rng(0).normal(size=(2, 10)).astype(np.float32)
    a = MTMPolicy(model, ck.metadata, PolicyConfig(mode="bc", action_history=False), num_envs=2)
    b = MTMPolicy(model, ck.metadata, num_envs=2, mode="bc", action_history=False)
    assert a.config == b.config and a.mode == b.mode == "bc"
    assert np.array_equal(a.act(obs), b.act(obs))
    # a keyword overrides one field of a given config
    c = MTMPolicy(model, ck.metadata, PolicyConfig(mode="bc"), target_fraction=0.5, mode="rcbc")
    assert c.config == dataclasses.replace(PolicyConfig(), mode="rcbc", target_fraction=0.5)
    with pytest.raises(TypeError, match="unknown setting"):
        MTMPolicy(model, ck.metadata, modee="bc")
    with pytest.raises(ConfigError, match="not both"):
        MTMPolicy(model, ck.metadata, target_return=1.0, target_fraction=0.5)
    # None leaves a field alone (mode=None: no --mode given), except where None is a value of its own
    d = MTMPolicy(model, ck.metadata, PolicyConfig(mode="bc", target_fraction=0.5, plan_max_gain=0.1),
                  mode=None, target_fraction=None, plan_max_gain=None)
    assert (d.config.mode, d.config.target_fraction, d.config.plan_max_gain) == ("bc", None, None)


def test_eval_cli_refuses_both_targets_before_any_work(reacher_run, tmp_path):
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(tmp_path / "missing"), "--target-return", "1",
                                       "--target-fraction", "0.5"])
    assert result.exit_code == 1
    assert "--target-return and --target-fraction: give one of them, not both" in result.output
