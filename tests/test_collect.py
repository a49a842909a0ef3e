import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from envs.references import reference_scores
from envs.tasks import TASKS
from mtm import collect as collect_module
from mtm.cli import main
from mtm.collect import CollectOptions, collect, noise_schedule, parse_noise
from mtm.data.episode import STATE_KEY
from mtm.data.formats.native import NativeSource
from mtm.errors import ConfigError
from mtm.rollout import ExpertPolicy

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args):
    return CliRunner().invoke(main, ["collect", "--no-progress", *args])


def test_collect_writes_a_self_describing_dataset(tmp_path):
    out = tmp_path / "reacher.hdf5"
    result = run_cli("--env", "Reacher-v5", "--policy", "expert", "--episodes", "6", "--num-envs", "4",
                     "--seed", "7", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "saved 6 episodes (300 steps)" in result.output
    with NativeSource(out) as src:
        info = src.info
        assert len(src) == 6
        assert info.source_format == "collect" and info.env_id == "Reacher-v5"
        assert (info.ref_min_score, info.ref_max_score) == reference_scores("Reacher-v5")
        assert info.observation_space["shape"] == [10] and info.action_space["shape"] == [2]
        assert info.extra["policy"] == "expert" and info.extra["seed"] == 7 and info.extra["num_envs"] == 4
        assert info.extra["pixels"] is None and "mtm_version" in info.extra
        assert "seeds 7..12" in info.source
        episodes = list(src)
    assert [ep.seed for ep in episodes] == list(range(7, 13))
    for ep in episodes:
        assert ep.length == 50 and ep.has_final_observation and ep.truncated
        assert ep.episode_return > -10


def test_noise_blocks_make_a_mixed_quality_dataset(tmp_path):
    out = tmp_path / "mixed.hdf5"
    result = run_cli("--env", "Reacher-v5", "--policy", "expert", "--episodes", "8", "--noise", "0,0.5",
                     "--output", str(out))
    assert result.exit_code == 0, result.output
    with NativeSource(out) as src:
        assert src.info.extra["noise"] == [0.0, 0.5]
        returns = [ep.episode_return for ep in src]
    assert max(returns[4:]) < min(returns[:4])  # noise 0.5 costs ~25 return per episode


def test_noise_parsing_and_schedule():
    assert parse_noise(None) == () and parse_noise("0, 0.1,0.3") == (0.0, 0.1, 0.3)
    for bad in ("x", "-0.1", "nan"):
        with pytest.raises(ConfigError, match="--noise"):
            parse_noise(bad)
    schedule = noise_schedule((0.0, 0.1, 0.3), 10)
    assert [schedule(i) for i in range(10)] == [0.0] * 4 + [0.1] * 3 + [0.3] * 3


def test_collect_with_pixels(tmp_path):
    out = tmp_path / "pixels.hdf5"
    result = run_cli("--env", "Reacher-v5", "--policy", "random", "--episodes", "2", "--pixels",
                     "--image-size", "16", "--output", str(out))
    assert result.exit_code == 0, result.output
    with NativeSource(out) as src:
        assert src.info.observation_space["type"] == "Dict"
        assert src.info.extra["pixels"] == {"size": 16, "camera": None}
        ep = src.episode(0)
    assert ep.observations["pixels"].shape == (51, 16, 16, 3) and ep.observations["pixels"].dtype == np.uint8
    assert ep.observations[STATE_KEY].shape == (51, 10)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "Reacher-v55"], "unknown environment id 'Reacher-v55'; did you mean Reacher-v5"),
        (["--episodes", "0"], "--episodes must be >= 1, got 0"),  # checked while parsing
        (["--num-envs", "0"], "--num-envs must be >= 1, got 0"),
        (["--policy", "genius"], "unknown policy 'genius'; choose one of: random, expert"),
        (["--env", "Pendulum-v1", "--policy", "expert"], "Pendulum-v1 has no scripted expert; envs with one: Reacher-v5, mtm/PusherPixels-v0, mtm/PusherPixels2Cam-v0, mtm/ReacherPixels-v0"),
        (["--noise", "0.1"], "--noise applies to --policy expert only"),
        (["--image-size", "32"], "--image-size needs --pixels"),
        (["--pixels", "--image-size", "0"], "--image-size must be positive"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_1(tmp_path, args, message):
    base = {"--env": "Reacher-v5", "--episodes": "2", "--policy": "random"}
    merged = list(args)
    for key, value in base.items():
        if key not in args:
            merged += [key, value]
    out = tmp_path / "out.hdf5"
    result = run_cli(*merged, "--output", str(out))
    assert result.exit_code == 1
    assert result.output.strip() == f"error: {message}" or result.output.strip().startswith(f"error: {message}")
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.iterdir())


def test_existing_output_is_left_untouched_without_overwrite(tmp_path):
    out = tmp_path / "keep.hdf5"
    out.write_bytes(b"precious")
    result = run_cli("--env", "Reacher-v5", "--episodes", "2", "--output", str(out))
    assert result.exit_code == 1 and "already exists; pass --overwrite" in result.output
    assert out.read_bytes() == b"precious"
    result = run_cli("--env", "Reacher-v5", "--episodes", "2", "--output", str(out), "--overwrite")
    assert result.exit_code == 0
    with NativeSource(out) as src:
        assert len(src) == 2


class _InterruptAfter(ExpertPolicy):
    """Raises KeyboardInterrupt (as Ctrl-C would) on the given act() call."""

    def __init__(self, expert, action_space, calls):
        super().__init__(expert, action_space)
        self.calls = calls

    def act(self, observations):
        self.calls -= 1
        if self.calls == 0:
            raise KeyboardInterrupt
        return super().act(observations)


@pytest.mark.parametrize("calls, kept", [(30, 0), (130, 4)])  # 2 envs, 50 steps: 2 episodes per 50 calls
def test_interrupt_keeps_finished_episodes_or_writes_nothing(tmp_path, monkeypatch, calls, kept):
    def builder(ctx):
        return _InterruptAfter(TASKS[ctx.env_id].expert(), ctx.action_space, calls), "interrupting expert"

    monkeypatch.setitem(collect_module.POLICIES, "interrupting", builder)
    out = tmp_path / "cut.hdf5"
    result = collect(CollectOptions("Reacher-v5", "interrupting", 10, out, num_envs=2), progress=False)
    assert result.interrupted and result.episodes == kept
    assert not (tmp_path / "cut.hdf5.partial").exists()
    if kept == 0:
        assert result.path is None and not out.exists()
    else:
        with NativeSource(out) as src:
            assert len(src) == kept and all(ep.length == 50 for ep in src)
            # The file says which episodes it holds, not the ones that were asked for.
            assert src.info.source.endswith("reset seeds 0..3 (interrupted after 4 of 10 episodes)")
            assert src.info.extra["episodes_requested"] == 10 and src.info.extra["interrupted"] is True
            assert src.info.extra["reset_seeds"] == [[0, 3]]


def test_seed_lists_are_described_as_ranges():
    assert collect_module.describe_seeds([5]) == "5"
    assert collect_module.describe_seeds([3, 0, 1, 2, 5, 7, 8]) == "0..3, 5, 7..8"
    assert collect_module.seed_ranges([3, 0, 1, 2, 5, 7, 8]) == [[0, 3], [5, 5], [7, 8]]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_or_sigterm_in_a_real_process_commits_complete_episodes(tmp_path, signum, code, said):
    out = tmp_path / "big.hdf5"
    env = dict(os.environ, MUJOCO_GL="egl", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from mtm.cli import main; main()", "collect", "--env", "Reacher-v5",
         "--policy", "expert", "--episodes", "100000", "--num-envs", "2", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env,
        # A suite started in the background by a non-interactive shell (`cmd &`) has SIGINT ignored, and
        # the child would inherit that and never see the Ctrl-C: give it the default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    progress = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:  # the process ended early: the assertions below show why
            break
        progress += chunk
        counts = [int(c) for c in re.findall(rb"(\d+)/100000", progress)]
        if counts and max(counts) >= 20:
            break
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=30)
    stderr = (progress + stderr).decode()
    assert proc.returncode == code, stderr
    match = re.search(re.escape(said) + r": kept the (\d+) of 100000 episodes", stderr)
    assert match, stderr
    with NativeSource(out) as src:
        assert len(src) == int(match.group(1)) >= 20
        for i in range(len(src)):
            ep = src.episode(i)  # validates
            assert ep.length == 50 and ep.truncated and ep.seed == i
    assert not (tmp_path / "big.hdf5.partial").exists()


def test_datasets_readme_shows_the_default_recipe():
    recipe = TASKS["Reacher-v5"].recipe
    assert recipe.command("Reacher-v5") in (REPO / "datasets" / "README.md").read_text()
