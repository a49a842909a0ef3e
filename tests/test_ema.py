"""train.ema_decay: the weight average (values, warm-up, buffers), what a run saves, validates and
evaluates with it, and that a resumed run keeps averaging exactly where the killed one stopped."""

import pytest
import torch

from mtm.checkpoint import load_checkpoint
from mtm.config import RunConfig, load_config
from mtm.training.ema import WeightAverage
from mtm.training.loop import train

from test_train import TINY, losses, train_full_and_killed, write_linear_system


def test_average_follows_the_warm_up_decay_and_copies_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    start = [p.detach().clone() for p in model.parameters()]
    average = WeightAverage(model, decay=0.9)
    expected = [p.clone() for p in start]
    for update in range(1, 40):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)
            model[1].running_mean.add_(1.0)
        decay = min(0.9, (1 + update) / (10 + update))  # the warm-up, then the set decay
        expected = [e + (1 - decay) * (p.detach() - e) for e, p in zip(expected, model.parameters())]
        average.update(model)
        assert average.current_decay() == min(0.9, (1 + update) / (10 + update))
    for e, a in zip(expected, average.model.parameters(), strict=True):
        torch.testing.assert_close(a, e)
    assert torch.equal(average.model[1].running_mean, model[1].running_mean)  # buffers copied, not averaged
    assert not average.model.training and not any(p.requires_grad for p in average.model.parameters())
    # Weights drifting 0.1 a step: the average lags by about 0.1 d / (1 - d), d = 40/49 still in warm-up
    lag = (next(model.parameters()) - next(average.model.parameters())).mean().item()
    assert lag == pytest.approx(0.1 * (40 / 49) / (9 / 49), rel=0.15)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ValueError, match="ema decay must be in"):
        WeightAverage(torch.nn.Linear(2, 2), decay)
    if decay != 0.0:
        with pytest.raises(Exception, match="ema_decay must be in"):
            load_config(RunConfig, None, [f"train.ema_decay={decay}"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_linear_system(tmp_path_factory.mktemp("data") / "linear.hdf5")


def _params(state: dict) -> dict:
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_checkpoint_holds_the_average_and_the_raw_weights_to_resume(dataset, tmp_path):
    run = tmp_path / "run"
    cfg = load_config(RunConfig, None, TINY + [f"data.path={dataset}", f"train.run_dir={run}", "train.steps=20",
                                               "train.val_every=20", "train.ema_decay=0.99"])
    result = train(cfg, progress=False)
    ck = load_checkpoint(run)
    state = ck.load_train_state()
    assert state["ema_updates"] == 20
    averaged, raw = _params(ck.model_state), _params(state["raw_model"])
    assert averaged.keys() == raw.keys()
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)  # the file is not the raw weights
    assert result.val["bc"]["mse"] > 0  # validated (on the average)


def test_resume_after_kill_9_continues_the_same_average(dataset, tmp_path):
    full, killed, returncode = train_full_and_killed([f"data.path={dataset}", "train.ema_decay=0.95"], tmp_path)
    assert returncode == -9 and load_checkpoint(killed).step == 20
    train(load_config(RunConfig, killed / "config.yaml", []), resume=killed, progress=False)

    expected, resumed = losses(full), losses(killed)
    assert [resumed[s] for s in range(1, 31)] == [expected[s] for s in range(1, 31)]  # trained on the raw weights
    a, b = load_checkpoint(full), load_checkpoint(killed)
    for key, value in a.model_state.items():
        assert torch.equal(value, b.model_state[key]), key  # and the same average
    assert b.load_train_state()["ema_updates"] == 30
