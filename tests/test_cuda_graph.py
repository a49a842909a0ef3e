"""CUDA graphs for the policy step (mtm.cuda_graph, PolicyConfig.cuda_graph): everything but the
capture itself runs on the CPU here, with a stand-in capture that replays by calling the function
again into the captured output (scripts/gpu_checks.sh measures the real one on a GPU)."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.cuda_graph import GraphedCall
from mtm.errors import ConfigError
from mtm.policy import MTMPolicy, load_model


def replay_by_calling(fn):
    """A CPU stand-in for capture_cuda_graph: the output tensor is fixed, replay() refills it."""
    output = fn()
    return (lambda: output.copy_(fn())), output


def test_a_graphed_call_copies_each_calls_inputs_into_its_own_and_returns_a_copy_of_the_output():
    calls = []

    def fn(x, y):
        calls.append(1)
        return x * 2 + y

    graphed = GraphedCall(fn, capture=replay_by_calling)
    x, y = torch.ones(3), torch.arange(3.0)
    first = graphed(x, y)
    torch.testing.assert_close(first, torch.tensor([2.0, 3.0, 4.0]))
    x.fill_(5.0)  # the caller's tensors may change afterwards: the graph keeps its own copies
    second = graphed(x, torch.zeros(3))
    torch.testing.assert_close(second, torch.full((3,), 10.0))
    torch.testing.assert_close(first, torch.tensor([2.0, 3.0, 4.0]))  # a copy, not the graph's buffer
    with pytest.raises(ValueError, match="first call's tensors"):
        graphed(torch.ones(4), torch.ones(4))
    with pytest.raises(ValueError, match="float64"):
        graphed(torch.ones(3, dtype=torch.float64), torch.ones(3))


def test_a_capture_that_fails_keeps_nothing_and_is_tried_again():
    attempts = []

    def capture(fn):
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("capture failed")
        return replay_by_calling(fn)

    graphed = GraphedCall(lambda x: x + 1, capture=capture)
    with pytest.raises(RuntimeError):
        graphed(torch.zeros(2))
    torch.testing.assert_close(graphed(torch.ones(2)), torch.full((2,), 2.0))
    assert len(attempts) == 2


@pytest.mark.parametrize("mode", ["rcbc", "bc"])
def test_a_graphed_policy_acts_as_the_eager_one_and_falls_back_with_fewer_slots(reacher_run, mode):
    """The graphed policy (static forward, inputs copied into fixed buffers) gives the eager policy's
    actions at every step of the window's filling and sliding, and acts eagerly when fewer env
    slots than it was built for act (the last episodes of an evaluation)."""
    ck = load_checkpoint(reacher_run)
    model = load_model(ck)
    eager = MTMPolicy(model, ck.metadata, mode=mode, num_envs=3, precision="fp32")
    graphed = MTMPolicy(model, ck.metadata, mode=mode, num_envs=3, precision="fp32")
    graphed.cuda_graph = GraphedCall(graphed._static_predict, capture=replay_by_calling)
    captures = []
    original = graphed.cuda_graph._capture
    graphed.cuda_graph._capture = lambda fn: captures.append(1) or original(fn)
    rng = np.random.default_rng(0)
    for policy in (eager, graphed):
        policy.reset()
    for t in range(7):
        n = 3 if t < 6 else 2
        obs = rng.normal(size=(n, 10)).astype(np.float32)
        np.testing.assert_allclose(graphed.act(obs), eager.act(obs), atol=1e-5, rtol=1e-5)
        for policy in (eager, graphed):
            policy.observe(np.ones(n))
    assert captures == [1]  # captured once, replayed at every later step with all 3 slots


def test_cuda_graph_on_a_cpu_is_one_error_line(reacher_run):
    ck = load_checkpoint(reacher_run)
    with pytest.raises(ConfigError, match="cuda_graph needs a CUDA device"):
        MTMPolicy(load_model(ck), ck.metadata, num_envs=2, cuda_graph=True)
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(reacher_run), "--episodes", "1", "--device", "cpu",
                                       "--cuda-graph", "--no-progress"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: cuda_graph needs a CUDA device") and "Traceback" not in result.output


def test_a_training_run_that_would_evaluate_with_cuda_graph_on_a_cpu_stops_before_it_starts(tmp_path, reacher_run):
    result = CliRunner().invoke(main, ["train", "--config", "demo", "--data", str(tmp_path / "none.hdf5"),
                                       "--run-dir", str(tmp_path / "run"), "--device", "cpu",
                                       "--set", "train.eval_every=10", "--set", "train.eval_policy.cuda_graph=true",
                                       "--no-progress"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "train.eval_policy.cuda_graph needs a CUDA device" in result.output
    assert not (tmp_path / "run").exists()
