"""Policy mode id: the next state predicted through the bc view, then the action by inverse dynamics
from the current state and that one (mtm.policy, NEXT_STATE_FIRST in mtm.model.masks)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.errors import ConfigError
from mtm.model.masks import TokenLayout, bc_mask, inverse_dynamics_mask, without_action_history
from mtm.model.network import ModelConfig
from mtm.model.tokenizers import ContinuousTokenizer
from mtm.policy import MTMPolicy, load_model
from mtm.policy_config import POLICY_MODES

S, A = 10, 2  # Reacher-v5's, so the reacher run's metadata fits


class DoublingModel:
    """next state = 2 x the state before it; the action at t = state[t + 1] - state[t] (inverse
    dynamics of a known system). Mode id must then act s_hat - s = s. Records every call."""

    policy_modes, fp32_only = POLICY_MODES, None

    def __init__(self, window):
        self.window = window
        self.config = ModelConfig(width=16, heads=2)
        self.tokenizers = {"states": ContinuousTokenizer(S, np.zeros(S), np.ones(S), name="states"),
                           "returns": ContinuousTokenizer(1, [0.0], [1.0], name="returns"),
                           "actions": ContinuousTokenizer(A, np.zeros(A), np.ones(A), name="actions")}
        self.layout = TokenLayout.from_tokenizers(self.tokenizers, window)
        self.calls = []

    def to(self, device):
        return self

    def eval(self):
        return self

    def inference_work(self, windows):
        return windows

    def predict(self, batch, visible, heads=None, **_):
        states = batch["states"]
        self.calls.append((heads, visible.clone(), states.clone()))
        out = {"states": torch.cat([torch.zeros_like(states[:, :1]), 2 * states[:, :-1]], 1),
               "actions": torch.cat([states[:, 1:] - states[:, :-1], torch.zeros_like(states[:, :1])], 1)[..., :A]}
        return {k: out[k] for k in heads}


@pytest.mark.parametrize("window,action_history", [(2, True), (3, True), (3, False)])
def test_mode_id_acts_on_the_inverse_dynamics_of_the_predicted_next_state(reacher_run, window, action_history):
    metadata = load_checkpoint(reacher_run).metadata
    model = DoublingModel(window)
    policy = MTMPolicy(model, metadata, mode="id", num_envs=2, action_history=action_history)
    assert policy.mode == "id" and not policy.conditions_on_return
    lay = model.layout
    rng = np.random.default_rng(0)
    seen = []
    for step in range(4):
        obs = rng.uniform(-0.4, 0.4, size=(2, S)).astype(np.float32)  # inside the action bounds
        model.calls.clear()
        action = policy.act(obs)
        np.testing.assert_allclose(action, obs[:, :A], rtol=1e-6)  # 2s - s
        (h1, v1, _), (h2, v2, states) = model.calls
        c = min(step, window - 2)  # the current step's position: never the window's last
        assert h1 == ("states",) and h2 == ("actions",)
        views = [bc_mask(lay, c), inverse_dynamics_mask(lay, c)]  # the next state from the history, then ID
        if not action_history:  # both views without the past actions (the default)
            views = [without_action_history(view, lay) for view in views]
        assert torch.equal(v1, views[0].expand(2, -1)) and torch.equal(v2, views[1].expand(2, -1))
        torch.testing.assert_close(states[:, c + 1], 2 * torch.as_tensor(obs))  # the imagined state
        seen.append(obs)
        for back in range(c + 1):  # the history slides: the real states of the earlier steps
            torch.testing.assert_close(states[:, c - back], torch.as_tensor(seen[-1 - back]))


def test_mode_id_needs_two_steps_per_window_and_no_images(reacher_run):
    metadata = load_checkpoint(reacher_run).metadata
    with pytest.raises(ConfigError, match="needs a model of 2 or more steps per window"):
        MTMPolicy(DoublingModel(1), metadata, mode="id")
    assert MTMPolicy(DoublingModel(1), metadata, mode="bc").mode == "bc"


def test_mode_id_end_to_end_in_the_eval_command(reacher_run, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(reacher_run), "--mode", "id", "--episodes", "2",
                                       "--num-envs", "2", "--no-progress", "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["mode"] == "id" and len(report["per_episode"]) == 2
    assert np.isfinite(report["return_mean"])
    # a real model: the action differs from bc's, which reads the action at the window's last step
    checkpoint = load_checkpoint(reacher_run)
    model = load_model(checkpoint)
    obs = np.random.default_rng(1).normal(size=(2, S)).astype(np.float32)
    bc = MTMPolicy(model, checkpoint.metadata, mode="bc", num_envs=2)
    ident = MTMPolicy(model, checkpoint.metadata, mode="id", num_envs=2)
    assert not np.allclose(bc.act(obs), ident.act(obs))
