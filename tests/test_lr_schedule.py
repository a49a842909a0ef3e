"""The learning-rate schedule on short runs and on resume: a run that is all warm-up is warned about,
and a resume with another train.steps (warmup_steps, lr) follows the schedule of a run planned with
the new values from the start, and says so in one line (mtm.training.optim)."""

import json
import warnings

import pytest

from mtm.config import RunConfig, load_config
from mtm.errors import MTMWarning
from mtm.training.loop import train
from mtm.training.optim import learning_rate, resume_schedule_note, short_run_warning
from mtm.training.rundir import METRICS_FILE
from test_train import TINY, write_linear_system


def config(overrides):
    return load_config(RunConfig, None, overrides).train


def test_a_run_that_is_all_warm_up_is_named():
    message = short_run_warning(config(["train.steps=200", "train.warmup_steps=500"]))
    assert message.startswith("train.steps 200 <= train.warmup_steps 500: the whole run is warm-up")
    assert "--set train.warmup_steps=20" in message and "\n" not in message
    assert short_run_warning(config(["train.steps=200", "train.warmup_steps=200"])) is not None
    assert short_run_warning(config(["train.steps=201", "train.warmup_steps=200"])) is None


def test_the_resume_note_gives_the_rates_before_and_after():
    tc = config(["train.steps=300", "train.warmup_steps=500", "train.lr=5e-4"])
    note = resume_schedule_note({"steps": 200, "warmup_steps": 500, "lr": 5e-4}, tc, 200)
    # Before: all 200 steps warm-up, the last at the full rate; after: warm-up over 300, step 201 at 201/300.
    assert note == ("resuming at step 200 with train.steps 200 -> 300: the learning rate follows the schedule of a "
                    "run planned with the new values from the start (warm-up 300 steps, cosine to 0 at step 300): "
                    "step 200 trained at 5.0e-04, step 201 trains at 3.4e-04")
    assert resume_schedule_note({"steps": 300, "warmup_steps": 500, "lr": 5e-4}, tc, 200) is None


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_linear_system(tmp_path_factory.mktemp("lr") / "d.hdf5", episodes=6, length=12)


def lrs(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    return {row["step"]: row["train/lr"] for row in rows if "train/lr" in row}


def run_config(data, run_dir, *extra):
    return load_config(RunConfig, None, TINY + [f"data.path={data}", f"train.run_dir={run_dir}",
                                                "train.val_every=0", "train.save_every=0", *extra])


def test_resume_with_more_steps_follows_the_longer_schedule_and_says_so(data, tmp_path):
    run = tmp_path / "run"
    with pytest.warns(MTMWarning, match="train.steps 4 <= train.warmup_steps 5: the whole run is warm-up"):
        train(run_config(data, run, "train.steps=4"), progress=False, say=None)
    longer = run_config(data, run, "train.steps=8", "train.lr=2e-3")
    with pytest.warns(MTMWarning, match=r"resuming at step 4 with train\.steps 4 -> 8, train\.lr 0\.001 -> 0\.002: "
                                        r".* step 4 trained at 1\.0e-03, step 5 trains at 2\.0e-03"):
        train(longer, resume=run, progress=False, say=None)
    logged = lrs(run)
    # Logged at step s: the rate of the next step (0-based index s), as a fresh 8-step run would have it.
    for step in range(5, 9):
        assert logged[step] == pytest.approx(learning_rate(longer.train, step)), step
    assert logged[4] == pytest.approx(1e-3)  # logged before the resume: the first 4 steps kept their schedule


def test_resume_with_the_same_schedule_is_quiet(data, tmp_path):
    run = tmp_path / "run"
    train(run_config(data, run, "train.steps=6", "train.save_every=3", "train.warmup_steps=2"),
          progress=False, say=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MTMWarning)
        train(run_config(data, run, "train.steps=6", "train.save_every=3", "train.warmup_steps=2"),
              resume=run, progress=False, say=None)


def test_follow_schedule_sets_the_next_steps_rate_and_the_base_rate():
    import torch

    from mtm.training.optim import build_scheduler, follow_schedule

    old, new = config(["train.steps=4", "train.warmup_steps=5", "train.lr=1e-3"]), \
        config(["train.steps=8", "train.warmup_steps=5", "train.lr=2e-3"])
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight], lr=old.lr)
    scheduler = build_scheduler(optimizer, old)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    saved = scheduler.state_dict(), optimizer.state_dict()
    optimizer = torch.optim.AdamW([weight], lr=new.lr)
    scheduler = build_scheduler(optimizer, new)
    scheduler.load_state_dict(saved[0])
    optimizer.load_state_dict(saved[1])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # restored: the old schedule's rate
    follow_schedule(optimizer, scheduler, new, 4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(learning_rate(new, 4))
    assert scheduler.get_last_lr() == [pytest.approx(learning_rate(new, 4))]
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(learning_rate(new, 5))


def test_resume_with_fewer_steps_than_taken_is_refused(data, tmp_path):
    from mtm.errors import ConfigError

    run = tmp_path / "run"
    train(run_config(data, run, "train.steps=3", "train.warmup_steps=1"), progress=False, say=None)
    saved = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError, match=r"is at step 3 and train.steps is 2: nothing to train; resume with "
                                          r"--set train.steps=N for some N > 3"):
        train(run_config(data, run, "train.steps=2", "train.warmup_steps=1"), resume=run, progress=False, say=None)
    assert (run / "config.yaml").read_text() == saved  # the run is left as it was
