"""Logs a person can read when output is not a terminal: one plain, timestamped line per log step,
one per validation and per evaluation, the run's paths at the start, no `\\r` bar (mtm.training.progress)."""

import datetime
import re

from click.testing import CliRunner

from conftest import TINY_REACHER
from mtm.cli import main
from mtm.training.progress import TrainProgress, eval_line, format_duration, val_line

SCALARS = {"train/loss": 0.41234, "train/lr": 5e-4, "charts/samples_per_s": 2890.4}


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def lines_of(start=0, total=100):
    clock, said = FakeClock(), []
    progress = TrainProgress(said.append, total=total, start=start, bar=False, clock=clock,
                             now=lambda: datetime.datetime(2026, 1, 2, 3, 4, 5))
    return progress, clock, said


def test_one_line_per_log_step_with_time_elapsed_and_eta():
    progress, clock, said = lines_of()
    for _ in range(20):
        progress.step()
    clock.t += 10.0  # 20 steps in 10 s: 80 left take 40 s
    progress.logged(20, SCALARS)
    assert said == ["03:04:05  step  20/100  loss 0.4123  lr 5.0e-04  2890 samples/s  elapsed 0:00:10  ETA 0:00:40"]
    progress.close()


def test_a_resumed_run_counts_its_eta_from_the_steps_it_took():
    progress, clock, said = lines_of(start=200, total=300)
    clock.t += 5.0
    progress.logged(250, SCALARS)  # 50 steps in 5 s, 50 left
    assert said[0].endswith("step 250/300  loss 0.4123  lr 5.0e-04  2890 samples/s  elapsed 0:00:05  ETA 0:00:05")
    progress.close()


def test_validation_and_evaluation_lines():
    progress, clock, said = lines_of()
    progress.validated(10, {"fd": {"ratio": 0.5}, "id": {"ratio": 0.25}})
    report = {"env_id": "Hopper-v5", "episodes": 1, "mode": "rcbc", "return_mean": 1.0, "return_std": 0.0,
              "normalized_score_mean": 50.0, "normalized_score_std": 2.0}
    progress.evaluated(10, report)
    assert said == [
        "03:04:05  validation at step 10: error / baseline error fd 0.500, id 0.250 (lower is better)",
        "03:04:05  evaluation at step 10: Hopper-v5, 1 episode, mode rcbc: return 1.00 +/- 0.00, "
        "normalised score 50.0 +/- 2.0",
    ]
    assert "10 episodes" in eval_line(10, {**report, "episodes": 10})
    assert val_line(3, {}) .startswith("validation at step 3")
    progress.close()


def test_a_bar_replaces_the_step_lines_and_none_is_silent(capsys):
    said = []
    progress = TrainProgress(said.append, total=10, start=0, bar=True)
    progress.logged(5, SCALARS)
    assert said == []  # the bar shows the loss itself
    progress.close()
    quiet = TrainProgress(None, total=10, start=0, bar=False)
    quiet.logged(5, SCALARS)
    quiet.evaluated(5, {"env_id": "x", "episodes": 2, "return_mean": 0.0, "return_std": 0.0})
    quiet.close()


def test_durations():
    assert [format_duration(s) for s in (0, 59.6, 3600 * 26 + 61)] == ["0:00:00", "0:01:00", "26:01:01"]


def test_train_without_a_terminal_prints_plain_lines(tmp_path):
    from mtm.collect import CollectOptions, collect

    data = tmp_path / "reacher.hdf5"
    collect(CollectOptions(env_id="Reacher-v5", policy="expert", episodes=4, output=data, num_envs=2), progress=False)
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--run-dir", str(run)]
    for override in TINY_REACHER + ["train.steps=4", "train.log_every=2", "train.eval_every=4",
                                    "train.eval_episodes=1", "train.eval_num_envs=1", "train.save_every=4"]:
        args += ["--set", override]
    result = CliRunner().invoke(main, args)  # stdout is not a terminal (and --progress is the default)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "\r" not in result.output
    assert f"run directory {run}: config {run / 'config.yaml'}, metrics {run / 'metrics.jsonl'}" in out
    stamp = r"\d\d:\d\d:\d\d  "
    steps = [line for line in out.splitlines() if re.match(stamp + "step ", line)]
    assert len(steps) == 2, out  # steps 2 and 4
    assert re.fullmatch(stamp + r"step 4/4  loss \d+\.\d{4}  lr \d\.\de[-+]\d\d  \d+ samples/s  "
                        r"elapsed \d+:\d\d:\d\d  ETA 0:00:00", steps[1])
    evaluation = [line for line in out.splitlines() if re.match(stamp + "evaluation at step 4: ", line)]
    assert len(evaluation) == 1 and "Reacher-v5, 1 episode, mode rcbc: return " in evaluation[0]
    assert "normalised score" in evaluation[0]
    # The final report names the mode `auto` resolved to, as `mtm eval` does (it said "mode -").
    assert "Reacher-v5: 1 episode, mode rcbc" in out
