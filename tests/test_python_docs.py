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
