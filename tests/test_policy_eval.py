"""The trained model as a policy (history buffers, return tokens) and `mtm eval`."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.config import RunConfig, load_config
from mtm.evaluation import evaluate_checkpoint
from mtm.io import is_atomic_temp
from mtm.policy import MTMPolicy, load_model
from mtm.training.loop import train

from conftest import TINY_REACHER as TINY


@pytest.fixture
def run_dir(reacher_run) -> Path:
    return reacher_run


def test_exactly_n_episodes_and_same_returns_for_any_num_envs(run_dir):
    ck = load_checkpoint(run_dir)
    one = evaluate_checkpoint(ck, episodes=5, num_envs=1, seed=7)
    four = evaluate_checkpoint(ck, episodes=5, num_envs=4, seed=7)
    assert one["episodes"] == four["episodes"] == 5
    assert [e["index"] for e in four["per_episode"]] == [0, 1, 2, 3, 4]
    assert [e["seed"] for e in four["per_episode"]] == [7, 8, 9, 10, 11]
    np.testing.assert_allclose([e["return"] for e in one["per_episode"]],
                               [e["return"] for e in four["per_episode"]], rtol=1e-5, atol=1e-5)
    assert sum(e["length"] for e in four["per_episode"]) == 5 * 50  # Reacher: 50-step episodes


def test_normalized_score_follows_the_formula(run_dir):
    report = evaluate_checkpoint(load_checkpoint(run_dir), episodes=3, num_envs=3)
    refs = report["reference_scores"]
    assert refs is not None and refs["max"] > refs["min"]
    for e in report["per_episode"]:
        assert e["normalized_score"] == pytest.approx(100 * (e["return"] - refs["min"]) / (refs["max"] - refs["min"]))
    assert report["normalized_score_mean"] == pytest.approx(np.mean([e["normalized_score"] for e in report["per_episode"]]))
    assert report["checkpoint_step"] == 40 and report["mode"] == "rcbc"



def test_tasks_that_define_success_report_the_share_of_episodes_solved_at_their_last_step(run_dir, monkeypatch):
    import dataclasses

    import gymnasium as gym

    from envs.tasks import TASKS
    from mtm.evaluation.rollouts import format_report

    ck = load_checkpoint(run_dir)
    plain = evaluate_checkpoint(ck, episodes=6, num_envs=2, seed=3)
    assert "success_rate" not in plain and all("success" not in r for r in plain["per_episode"])

    # A success test read after every step, of which the episode's last reading counts: true only at
    # the 50th (last) step of Reacher-v5, and only where the reset put the target at x > 0.
    def solved(env) -> bool:
        raw = env.unwrapped
        return raw.data.time >= 50 * raw.dt - 1e-9 and raw.data.qpos[2] > 0

    monkeypatch.setitem(TASKS, "Reacher-v5", dataclasses.replace(TASKS["Reacher-v5"], success=solved))
    report = evaluate_checkpoint(ck, episodes=6, num_envs=2, seed=3)
    env, expected = gym.make("Reacher-v5"), []
    for i in range(6):  # episode i is reset with seed 3 + i
        env.reset(seed=3 + i)
        expected.append(bool(env.unwrapped.data.qpos[2] > 0))
    env.close()
    assert 0 < sum(expected) < 6  # the check tells episodes apart
    assert [r["success"] for r in report["per_episode"]] == expected
    assert report["success_rate"] == sum(expected) / 6
    assert [r["return"] for r in report["per_episode"]] == [r["return"] for r in plain["per_episode"]]
    assert (f"  success           {100 * sum(expected) / 6:.0f} % ({sum(expected)} of 6 episodes end solved)"
            in format_report(report))


def test_batched_policy_equals_one_policy_per_env(run_dir):
    ck = load_checkpoint(run_dir)
    model = load_model(ck)
    rng = np.random.default_rng(0)
    sequences = rng.normal(size=(3, 7, 10)).astype(np.float32)  # 3 envs, 7 steps: past the window of 4
    batched = MTMPolicy(model, ck.metadata, num_envs=3)
    singles = [MTMPolicy(model, ck.metadata, num_envs=1) for _ in range(3)]
    batched.reset()
    for p in singles:
        p.reset()
    for t in range(7):
        together = batched.act(sequences[:, t])
        apart = np.concatenate([p.act(sequences[i, t][None]) for i, p in enumerate(singles)])
        np.testing.assert_allclose(together, apart, atol=1e-5)
    # The history holds the last L states in order, the newest at position L-1.
    np.testing.assert_allclose(batched.states[1].numpy(), sequences[1, 3:7], atol=0)
    assert batched.steps.tolist() == [7, 7, 7]
    # Resetting one slot starts its history over; the others keep theirs.
    batched.reset(np.array([1]), np.array([9]))
    assert batched.steps.tolist() == [7, 0, 7] and batched.states[1].abs().sum() == 0


def test_actions_are_clipped_to_the_action_space(run_dir):
    ck = load_checkpoint(run_dir)
    policy = MTMPolicy(load_model(ck), ck.metadata, num_envs=2)
    policy.reset()
    actions = policy.act(np.full((2, 10), 1e4, np.float32))  # far outside the data: wild predictions
    assert actions.shape == (2, 2) and np.all(np.abs(actions) <= 1.0)


@pytest.mark.parametrize("kind,decrement,steps,received,expected", [
    ("sum", False, 3, 5.0, 100.0),
    ("sum", True, 3, 5.0, 95.0),
    ("average", False, 3, 5.0, 100.0 / 50),
    ("average", True, 10, 20.0, (100.0 - 20.0) / 40),
    ("discounted", False, 0, 0.0, (100.0 / 50) * (1 - 0.9 ** 50) / (1 - 0.9)),
    ("discounted", True, 10, 20.0, ((100.0 - 20.0) / 40) * (1 - 0.9 ** 40) / (1 - 0.9)),
])
def test_return_token_formulas(run_dir, kind, decrement, steps, received, expected):
    ck = load_checkpoint(run_dir)
    meta = {**ck.metadata, "rtg": {"kind": kind, "gamma": 0.9, "horizon": 50}}
    policy = MTMPolicy(load_model(ck), meta, target_return=100.0, decrement=decrement)
    token = policy.return_token(torch.tensor([steps]), torch.tensor([received], dtype=torch.float64))
    assert float(token[0]) == pytest.approx(expected, rel=1e-5)


def test_target_fraction_interpolates_between_worst_and_best_training_returns(run_dir):
    ck = load_checkpoint(run_dir)
    seen = ck.metadata["returns"]["episode_return"]
    low, high = seen["min"], seen["max"]
    assert high < 0  # Reacher returns are negative: a plain "fraction of the best" would go the wrong way
    assert MTMPolicy(load_model(ck), ck.metadata, target_fraction=0.5).target_return == pytest.approx((low + high) / 2)
    assert MTMPolicy(load_model(ck), ck.metadata, target_fraction=1.0).target_return == pytest.approx(high)
    assert MTMPolicy(load_model(ck), ck.metadata, target_fraction=1.1).target_return > high


def test_eval_cli_report_video_and_dynamics(run_dir, tmp_path):
    runner = CliRunner()
    report_path, video = tmp_path / "report.json", tmp_path / "video.mp4"
    r = runner.invoke(main, ["eval", "--checkpoint", str(run_dir), "--episodes", "3", "--num-envs", "2",
                             "--no-progress", "--output", str(report_path), "--video", str(video)])
    assert r.exit_code == 0, r.output
    report = json.loads(report_path.read_text())
    assert report["episodes"] == 3 and report["env_id"] == "Reacher-v5" and "normalised score" in r.output
    assert video.stat().st_size > 1000 and report["video"] == str(video)
    # Reacher steps 50 times a second: the video plays a frame per step at 30 frames/s.
    assert (report["video_fps"], report["video_speed"]) == (30, 0.6)
    assert f"{video} (30 frames/s, a frame per step, 0.6x real time)" in r.output
    r = runner.invoke(main, ["eval", "--checkpoint", str(run_dir), "--output", str(report_path), "--episodes", "1"])
    assert r.exit_code == 1 and "--overwrite" in r.output
    r = runner.invoke(main, ["eval", "--checkpoint", str(run_dir), "--task", "fd", "--task", "id"])
    assert r.exit_code == 0, r.output
    assert "fd" in r.output and "id" in r.output and "baseline" in r.output


def test_eval_cli_contact_sheet_and_video_options(run_dir, tmp_path):
    from PIL import Image

    runner = CliRunner()
    report_path, video, sheet = tmp_path / "report.json", tmp_path / "v.mp4", tmp_path / "sheet.png"
    r = runner.invoke(main, ["eval", "--checkpoint", str(run_dir), "--episodes", "3", "--num-envs", "2", "--no-progress",
                             "--video", str(video), "--contact-sheet", str(sheet), "--video-episodes", "2",
                             "--video-size", "64", "--video-quality", "nice", "--output", str(report_path)])
    assert r.exit_code == 0, r.output
    report = json.loads(report_path.read_text())
    assert report["contact_sheet"] == str(sheet) and report["video"] == str(video) and "contact sheet" in r.output
    assert report["recorded_episodes"] == [0, 1] and report["video_frames"] == 2 * 51  # reset frame + 50 steps each
    assert report["video_size"] == 64 and report["video_quality"] == "nice"
    assert report["video_camera"] == "the task's own view (Reacher-v5)" and report["video_render_frames_per_s"] > 0
    # 2 episodes x 8 tiles, 4 to a row: 4 rows of 64 px tiles with 2 px between them.
    with Image.open(sheet) as picture:
        assert picture.format == "PNG" and picture.size == (4 * 64 + 3 * 2, 4 * 64 + 3 * 2)
    assert not [p.name for p in tmp_path.iterdir() if is_atomic_temp(p.name) or ".partial" in p.name]
    # Without a video, the sheet alone (the default quality is fast).
    only = tmp_path / "only.png"
    r = runner.invoke(main, ["eval", "--checkpoint", str(run_dir), "--episodes", "1", "--no-progress",
                             "--contact-sheet", str(only), "--video-size", "32"])
    assert r.exit_code == 0, r.output
    assert "fast quality" in r.output and Image.open(only).size == (4 * 32 + 6, 2 * 32 + 2)


@pytest.mark.parametrize("args,message", [
    (["--video-quality", "ultra", "--video", "{tmp}/v.mp4"], "error: video quality must be one of fast, nice, got 'ultra'"),
    (["--contact-sheet", "{tmp}/sheet.jpg"], "error: {tmp}/sheet.jpg: a contact sheet is a PNG file"),
    (["--contact-sheet", "{tmp}/exists.png"], "error: {tmp}/exists.png: already exists; pass --overwrite"),
    (["--video", "{tmp}/x.png", "--contact-sheet", "{tmp}/x.png"], "error: {tmp}/x.png: the video and the contact sheet"),
    (["--output", "{tmp}/x.png", "--contact-sheet", "{tmp}/x.png"], "error: --output, --video and --contact-sheet need different"),
    (["--video-size", "8", "--video", "{tmp}/v.mp4"], "error: video frame size must be between 16 and 2048 pixels, got 8"),
    (["--video-episodes", "0", "--video", "{tmp}/v.mp4"], "error: the number of video episodes must be >= 1, got 0"),
    (["--contact-sheet", "{tmp}/exists.png/sheet.png"], "error: {tmp}/exists.png: is a file, not a folder"),
    # Every output is checked for overwriting before a missing folder is made for another.
    (["--output", "{tmp}/new/r.json", "--contact-sheet", "{tmp}/exists.png"], "error: {tmp}/exists.png: already exists"),
])
def test_eval_cli_bad_media_options(run_dir, tmp_path, args, message):
    (tmp_path / "exists.png").write_bytes(b"keep")
    args = [a.format(tmp=tmp_path) for a in args]
    r = CliRunner().invoke(main, ["eval", "--checkpoint", str(run_dir), "--episodes", "1", "--no-progress", *args])
    assert r.exit_code == 1, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message.format(tmp=tmp_path)) and "Traceback" not in r.output
    assert (tmp_path / "exists.png").read_bytes() == b"keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.png"]  # nothing written


def test_eval_cli_errors(run_dir, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["eval", "--checkpoint", str(tmp_path / "missing")])
    assert r.exit_code == 1 and "no such checkpoint" in r.output
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    r = runner.invoke(main, ["eval", "--checkpoint", str(broken)])
    assert r.exit_code == 1 and "error:" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["eval", "--checkpoint", str(run_dir), "--env", "Hopper-v5", "--episodes", "1"])
    assert r.exit_code == 1 and "11 dimensions" in r.output and "10" in r.output
    r = runner.invoke(main, ["eval", "--checkpoint", str(run_dir), "--episodes", "0"])
    assert r.exit_code == 1 and "episodes must be >= 1" in r.output
    r = runner.invoke(main, ["eval", "--checkpoint", str(run_dir), "--mode", "dance"])
    assert r.exit_code == 2 and "dance" in r.output
    r = runner.invoke(main, ["eval", "--checkpoint", str(run_dir), "--target-return", "1", "--target-fraction", "1"])
    assert r.exit_code == 1 and "not both" in r.output


def test_evaluation_during_training_logs_eval_scalars_and_keeps_resume_exact(tmp_path, run_dir):
    data = load_checkpoint(run_dir).metadata["dataset"]["path"]
    common = TINY + [f"data.path={data}", "train.steps=12", "train.save_every=6", "train.log_every=1",
                     "train.deterministic=true", "model.dropout=0.1"]
    plain, evaluated = tmp_path / "plain", tmp_path / "evaluated"
    train(load_config(RunConfig, None, common + [f"train.run_dir={plain}"]), progress=False)
    result = train(load_config(RunConfig, None, common + [f"train.run_dir={evaluated}", "train.eval_every=6",
                                                          "train.eval_episodes=3", "train.eval_num_envs=2",
                                                          "train.eval_video=true"]),
                   progress=False)
    assert result.eval["episodes"] == 3 and result.eval["normalized_score_mean"] is not None
    # Every evaluation wrote its video and, next to it, its contact sheet, which TensorBoard shows too.
    videos = evaluated / "videos"
    assert sorted(p.name for p in videos.iterdir()) == ["step_00000006.mp4", "step_00000006.png",
                                                        "step_00000012.mp4", "step_00000012.png"]
    assert result.eval["contact_sheet"] == str(videos / "step_00000012.png") and result.eval["video_frames"] == 51
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(evaluated), size_guidance={"images": 0})
    events.Reload()
    images = events.Images("eval/contact_sheet")
    assert [i.step for i in images] == [6, 12]
    assert (images[-1].width, images[-1].height) == (4 * 256 + 6, 2 * 256 + 2)  # one episode: 8 tiles, 2 rows
    rows = [json.loads(line) for line in open(evaluated / "metrics.jsonl")]
    evals = [r for r in rows if "eval/return_mean" in r]
    assert [r["step"] for r in evals] == [6, 12]
    assert {"eval/return_std", "eval/normalized_score", "eval/env_steps_per_s"} <= set(evals[0])
    # Rollouts do not disturb training: the losses equal those of the run without them.
    def losses(path):
        return [r["train/loss"] for r in (json.loads(line) for line in open(path / "metrics.jsonl")) if "train/loss" in r]
    assert losses(plain) == losses(evaluated)


def test_without_action_history_no_action_token_is_visible(run_dir):
    ck = load_checkpoint(run_dir)
    model = load_model(ck)
    policy = MTMPolicy(model, ck.metadata, num_envs=2, action_history=False)
    actions = model.layout.role("actions")
    assert not (policy._masks & actions).any()
    full = MTMPolicy(model, ck.metadata, num_envs=2)
    # Everything else the policy shows is unchanged.
    assert torch.equal(policy._masks, full._masks & ~actions)
    r = CliRunner().invoke(main, ["eval", "--checkpoint", str(run_dir), "--episodes", "2", "--num-envs", "2",
                                  "--no-action-history", "--no-progress"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("action_history", [True, False])
def test_each_action_is_the_models_prediction_on_the_window_of_the_last_l_steps(run_dir, action_history,
                                                                               either_cpu):
    """The policy's rolling buffers build exactly the windows the model trains on: at step t the
    states of steps t-c..t (c = min(t, L-1)) at positions 0..c, the actions it took before, the
    action at c hidden. Checked against model.predict on windows built from scratch, at the
    precision the policy resolved to (bf16 kernels may round differently along the policy's restricted
    decoding; on this suite's CPUs the two agree exactly, the tolerance allows one bf16 ulp)."""
    from mtm.model.masks import bc_mask

    ck = load_checkpoint(run_dir)
    model = load_model(ck)
    policy = MTMPolicy(model, ck.metadata, mode="bc", num_envs=1, action_history=action_history)
    tolerance = 2 ** -7 if policy.precision.dtype == "bf16" else 1e-5
    policy.reset()
    L, layout = model.window, model.layout
    states = np.random.default_rng(1).normal(size=(9, 10)).astype(np.float32)
    taken = []
    for t in range(len(states)):
        acted = torch.as_tensor(policy.act(states[t][None]))[0]
        lo = max(0, t - L + 1)
        c = t - lo
        window = {"states": torch.zeros(1, L, 10), "actions": torch.zeros(1, L, acted.shape[0]),
                  "returns": torch.zeros(1, L, 1), "timesteps": torch.arange(L)[None] + lo}
        window["states"][0, : c + 1] = torch.as_tensor(states[lo: t + 1])
        if c:
            window["actions"][0, :c] = torch.stack(taken[lo:t])
        mask = bc_mask(layout, c) if action_history else bc_mask(layout, c) & ~layout.role("actions")
        with policy.precision.autocast("cpu"):
            expected = model.predict(window, mask[None], heads=("actions",))["actions"][0, c].float()
        expected = torch.maximum(torch.minimum(expected, policy.action_high), policy.action_low)
        torch.testing.assert_close(acted, expected, atol=tolerance, rtol=tolerance)
        taken.append(acted)
