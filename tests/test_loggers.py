"""train.loggers: TensorBoard by default, Weights & Biases on request (offline unless WANDB_MODE says
otherwise), metrics.jsonl always; a missing wandb package is one error line before anything is done."""

import json
import sys
import types

import pytest

from mtm.config import RunConfig, load_config
from mtm.errors import ConfigError, MTMWarning
from mtm.training.loop import train

from tests.test_train import TINY, write_linear_system


class FakeRun:
    def __init__(self, **kwargs):
        self.init = kwargs
        self.logged, self.summary, self.finished = [], {}, False

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    runs = []
    module = types.ModuleType("wandb")
    module.util = types.SimpleNamespace(generate_id=lambda: "abc123")
    module.Image = lambda path: ("image", path)

    def init(**kwargs):
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return runs


def config(tmp_path, *extra):
    data = write_linear_system(tmp_path / "d.hdf5", episodes=6, length=12)
    return load_config(RunConfig, None, TINY + [f"data.path={data}", f"train.run_dir={tmp_path / 'run'}",
                                                "train.val_every=0", "train.log_every=1", "train.warmup_steps=1", *extra])


def test_wandb_gets_every_scalar_offline_and_a_resume_continues_the_same_run(tmp_path, fake_wandb):
    cfg = config(tmp_path, "train.steps=3", "train.loggers=[tensorboard, wandb]")
    train(cfg, progress=False, say=None)
    run = fake_wandb[0]
    assert run.init["mode"] == "offline" and run.init["project"] == "mtm" and run.init["id"] == "abc123"
    assert run.init["config"]["train"]["steps"] == 3 and run.init["resume"] is None
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [step for step, _ in run.logged] == [row["step"] for row in rows] == [1, 2, 3]
    assert run.logged[0][1] == {k: v for k, v in rows[0].items() if k != "step"}
    assert run.finished and list((tmp_path / "run").glob("events.out.tfevents.*"))  # TensorBoard too
    again = config(tmp_path, "train.steps=5", "train.loggers=[wandb]")
    with pytest.warns(MTMWarning, match="resuming at step 3 with train.steps 3 -> 5"):
        train(again, resume=tmp_path / "run", progress=False, say=None)
    assert fake_wandb[1].init["id"] == "abc123" and fake_wandb[1].init["resume"] == "allow"
    assert [step for step, _ in fake_wandb[1].logged] == [4, 5]


def test_wandb_mode_from_the_environment(tmp_path, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    train(config(tmp_path, "train.steps=2", "train.loggers=[wandb]"), progress=False, say=None)
    assert fake_wandb[0].init["mode"] == "online"
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))  # not asked for


def test_a_missing_wandb_package_is_one_error_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    cfg = config(tmp_path, "train.steps=1", "train.loggers=[wandb]")
    with pytest.raises(ConfigError, match=r"wandb package is not installed: pip install 'mtm\[wandb\]'"):
        train(cfg, progress=False, say=None)
    assert not (tmp_path / "run").exists()


def test_an_unknown_logger_is_named():
    with pytest.raises(ConfigError, match=r"loggers: unknown \['mlflow'\]; choose from tensorboard, wandb"):
        load_config(RunConfig, None, ["train.loggers=[mlflow]"])
