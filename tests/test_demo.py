"""`mtm demo`: the README's main command, end to end on a shortened budget."""

import json

from click.testing import CliRunner

from mtm.cli import main


def test_demo_collects_trains_evaluates_and_reports(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("envs.tasks.TASKS", _small_recipe())
    args = ["demo", "--no-progress", "--episodes", "4", "--set", "train.steps=20", "--set", "model.width=32",
            "--set", "train.val_every=10", "--set", "train.batch_size=64"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "collecting the default dataset" in r.output
    assert "score:" in r.output and "TensorBoard:   tensorboard --logdir runs/demo-" in r.output
    run_dir = next((tmp_path / "runs").glob("demo-*"))
    report = json.loads((run_dir / "eval_report.json").read_text())
    assert report["episodes"] == 4 and report["env_id"] == "Reacher-v5"
    assert (run_dir / "checkpoints" / "last").exists()
    from mtm.data.formats.native import NativeSource

    with NativeSource(tmp_path / "datasets" / "reacher-v5-mixed.hdf5") as src:
        assert len(src) == 24
    # A second run reuses the dataset and gets its own run directory.
    import time

    time.sleep(1.1)
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "using the dataset collected earlier" in r.output
    assert len(list((tmp_path / "runs").glob("demo-*"))) == 2


def _small_recipe():
    import dataclasses

    from envs import tasks

    spec = tasks.TASKS["Reacher-v5"]
    small = dataclasses.replace(spec, recipe=dataclasses.replace(spec.recipe, episodes=24))
    return {**tasks.TASKS, "Reacher-v5": small}


def test_a_stopped_demo_stops_and_leaves_no_partial_dataset(tmp_path, monkeypatch):
    """collect and train report a Ctrl-C or SIGTERM in their results: the demo stops with the
    command's exit code instead of training on part of its data or evaluating an unfinished run, and
    removes the partial dataset (its own cache), which would otherwise block the next demo."""
    import signal
    from pathlib import Path

    import mtm.demo as demo
    from mtm.collect import CollectResult
    from mtm.training.loop import TrainResult

    monkeypatch.chdir(tmp_path)
    partial = tmp_path / "datasets" / "reacher-v5-mixed.hdf5"

    def collect_stopped(options, progress=True):
        partial.write_bytes(b"half")
        return CollectResult(path=Path(options.output), episodes_requested=options.episodes, interrupted=True,
                             stop_signal=signal.SIGTERM)

    monkeypatch.setattr(demo, "collect", collect_stopped)
    r = CliRunner().invoke(main, ["demo", "--no-progress"])
    assert r.exit_code == 143 and "terminated (SIGTERM)" in r.output
    assert not partial.exists() and not (tmp_path / "runs").exists()

    def dataset(root, say, progress=True):
        return tmp_path / "data.hdf5"

    def train_stopped(cfg, progress=True, say=None):
        return TrainResult(run_dir=tmp_path / "runs" / "demo-x", step=3, checkpoint=None, val={}, interrupted=True)

    def never(*args, **kwargs):
        raise AssertionError("a stopped training is not evaluated")

    monkeypatch.setattr(demo, "default_dataset", dataset)
    monkeypatch.setattr(demo, "train", train_stopped)
    monkeypatch.setattr(demo, "evaluate_checkpoint", never)
    r = CliRunner().invoke(main, ["demo", "--no-progress"])
    assert r.exit_code == 130 and "interrupted" in r.output
