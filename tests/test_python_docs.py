"""docs/python.md's example is executed as written (the run directory is the only substitution)."""

import contextlib
import io
import re
from pathlib import Path

import mtm

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"


def test_the_python_example_runs_as_written(reacher_run):
    block = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    assert 'mtm.load_policy("runs/reacher"' in block
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(block.replace('"runs/reacher"', repr(str(reacher_run))), {})
    assert re.fullmatch(r"Reacher-v5: return -?\d+\.\d\d, mode rcbc\n", out.getvalue())


def test_load_policy_takes_policy_settings(reacher_run):
    policy = mtm.load_policy(reacher_run, num_envs=3, mode="bc", action_history=False)
    assert (policy.num_envs, policy.mode, policy.action_history, policy.env_id) == (3, "bc", False, "Reacher-v5")
    env = policy.make_env()
    try:
        assert env.spec.id == "Reacher-v5"
    finally:
        env.close()


def test_a_policy_whose_data_names_no_env_says_how_to_make_one(reacher_run):
    from mtm.checkpoint import load_checkpoint
    from mtm.errors import ConfigError
    from mtm.policy import MTMPolicy, load_model
    import pytest

    ck = load_checkpoint(reacher_run)
    policy = MTMPolicy(load_model(ck), ck.run_metadata.replace(env_id=None))
    assert policy.env_id is None
    with pytest.raises(ConfigError, match="names no environment; make one with gymnasium.make"):
        policy.make_env()


def test_predict_answers_each_task_with_its_mask(reacher_run):
    import numpy as np
    import pytest
    import torch

    from mtm.errors import ConfigError
    from mtm.model.masks import forward_dynamics_mask, goal_reaching_mask, inverse_dynamics_mask

    model = mtm.load_model(reacher_run)
    L, S, A = model.window, model.tokenizers["states"].dim, model.tokenizers["actions"].dim
    rng = np.random.default_rng(0)
    windows = {"states": rng.normal(size=(5, L, S)), "actions": rng.normal(size=(5, L, A)),
               "returns": rng.normal(size=(5, L, 1))}
    batch = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in windows.items()}
    for task, mask, c, target, at in [("fd", forward_dynamics_mask, L - 2, "states", L - 1),
                                      ("id", inverse_dynamics_mask, L - 2, "actions", L - 2),
                                      ("goal", goal_reaching_mask, 0, "actions", 0)]:
        want = model.predict(batch, mask(model.layout, c), heads=(target,))[target][:, at]
        got = mtm.predict(model, task, windows)
        assert got.shape == (5, S if target == "states" else A)
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(mtm.predict(model, "fd", windows, c=0),
                               model.predict(batch, forward_dynamics_mask(model.layout, 0), heads=("states",))["states"][:, 1])
    with pytest.raises(ConfigError, match="unknown task 'dynamics'; choose one of bc, rcbc, fd, id, goal"):
        mtm.predict(model, "dynamics", windows)
    with pytest.raises(ConfigError, match=r"windows\['states'\] must be \(B, 4, ...\)"):
        mtm.predict(model, "fd", {k: v[:, :2] for k, v in windows.items()})
    with pytest.raises(ConfigError, match="c = 3 is outside the window"):
        mtm.predict(model, "fd", windows, c=L - 1)
    with pytest.raises(ConfigError, match="needs returns"):
        mtm.predict(model, "rcbc", {k: v for k, v in windows.items() if k != "returns"})
