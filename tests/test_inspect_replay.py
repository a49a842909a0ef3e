"""`mtm inspect --video / --contact-sheet`: a dataset's first episodes replayed from its recorded MuJoCo state."""

from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mtm.cli import main
from mtm.contact_sheet import sample_steps
from mtm.data.formats.d4rl import D4RLSource
from mtm.replay import replay_frames, set_state
from mtm.video import RobotRenderer

SIZE = 32
LENGTHS = (4, 3)  # two episodes: the first ends on a terminal, the second is cut short


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def hopper_file(tmp_path_factory) -> Path:
    """A D4RL-layout file of Hopper-v5 random steps, qpos/qvel recorded before each step."""
    env = gym.make("Hopper-v5")
    rng = np.random.default_rng(0)
    rows: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts",
                                             "next_observations", "qpos", "qvel")}
    for episode, length in enumerate(LENGTHS):
        obs, _ = env.reset(seed=episode)
        for t in range(length):
            data = env.unwrapped.data
            rows["qpos"].append(data.qpos.copy())
            rows["qvel"].append(data.qvel.copy())
            action = rng.uniform(-1, 1, 3).astype(np.float32)
            next_obs, reward, _, _, _ = env.step(action)
            rows["observations"].append(obs)
            rows["actions"].append(action)
            rows["rewards"].append(reward)
            rows["terminals"].append(episode == 0 and t == length - 1)
            rows["timeouts"].append(False)
            rows["next_observations"].append(next_obs)
            obs = next_obs
    env.close()
    path = tmp_path_factory.mktemp("replay") / "hopper-tiny.hdf5"
    with h5py.File(path, "w") as f:
        for key in ("observations", "actions", "rewards", "next_observations"):
            f[key] = np.asarray(rows[key], np.float32)
        f["terminals"] = np.asarray(rows["terminals"])
        f["timeouts"] = np.asarray(rows["timeouts"])
        f["infos/qpos"] = np.asarray(rows["qpos"])
        f["infos/qvel"] = np.asarray(rows["qvel"])
        f["metadata/env_id"] = b"Hopper-v5"
    return path


def test_video_and_contact_sheet_have_a_frame_per_recorded_step(hopper_file, tmp_path):
    import imageio.v2 as imageio

    video, sheet = tmp_path / "out" / "replay.mp4", tmp_path / "replay.png"
    result = run("inspect", hopper_file, "--video", video, "--contact-sheet", sheet, "--episodes", "2",
                 "--video-size", SIZE)
    assert result.exit_code == 0, result.output
    assert f"2 episodes, {sum(LENGTHS)} frames in Hopper-v5" in result.stdout
    with imageio.get_reader(video) as reader:
        assert reader.count_frames() == sum(LENGTHS)
    # Every step of both episodes is a tile (fewer steps than tiles per episode): one row each of 4 columns.
    tiles = [len(sample_steps(n, 8)) for n in LENGTHS]
    assert tiles == list(LENGTHS)
    with Image.open(sheet) as image:
        assert image.size == (4 * SIZE + 3 * 2, 2 * SIZE + 2)


def test_the_default_replays_one_episode_and_existing_files_need_overwrite(hopper_file, tmp_path):
    sheet = tmp_path / "one.png"
    first = run("inspect", hopper_file, "--contact-sheet", sheet, "--video-size", SIZE)
    assert first.exit_code == 0, first.output
    assert f"1 episode, {LENGTHS[0]} frames" in first.stdout
    again = run("inspect", hopper_file, "--contact-sheet", sheet, "--video-size", SIZE)
    assert again.exit_code == 1
    assert error_lines(again) == [f"error: {sheet}: already exists; pass --overwrite to replace it"]
    assert run("inspect", hopper_file, "--contact-sheet", sheet, "--video-size", SIZE, "--overwrite").exit_code == 0


def test_a_replayed_frame_is_the_env_rendered_in_that_state(hopper_file):
    with D4RLSource(hopper_file) as source:
        recorded, fps, _ = replay_frames(source, episodes=1, size=SIZE)
    assert fps == 125  # Hopper-v5's render_fps: the video plays at 30 frames/s, like mtm eval's
    with h5py.File(hopper_file) as f:
        qpos, qvel = f["infos/qpos"][()], f["infos/qvel"][()]
    env = gym.make("Hopper-v5")
    env.reset(seed=0)  # the state episode 0 was recorded from, reached by the env itself
    renderer = RobotRenderer(env, SIZE)
    try:
        np.testing.assert_array_equal(recorded[0].frames[0], renderer.render())
        last = LENGTHS[0] - 1
        set_state(env, qpos[last], qvel[last])
        np.testing.assert_array_equal(recorded[0].frames[last], renderer.render())
    finally:
        renderer.close()
        env.close()
    assert not np.array_equal(recorded[0].frames[0], recorded[0].frames[-1])  # the robot moved
    returns = recorded[0].returns
    assert returns[0] == 0.0 and len(returns) == LENGTHS[0]


def test_a_file_without_qvel_is_one_error_line_and_writes_nothing(d4rl_file, tmp_path):
    video = tmp_path / "v.mp4"
    result = run("inspect", d4rl_file, "--video", video)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "infos/qvel" in lines[0]
    assert "Traceback" not in result.output and not video.exists()


def test_a_native_file_is_one_error_line_saying_it_stores_no_state(native_file, tmp_path):
    sheet = tmp_path / "s.png"
    result = run("inspect", native_file, "--contact-sheet", sheet)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "stores no simulator state" in lines[0] and "infos/qpos" in lines[0]
    assert not sheet.exists() and list(tmp_path.iterdir()) == [native_file]


def test_a_file_without_an_env_id_asks_for_env(hopper_file, tmp_path):
    bare = tmp_path / "bare.hdf5"
    with h5py.File(hopper_file) as src, h5py.File(bare, "w") as dst:
        for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations", "infos"):
            src.copy(key, dst)
    sheet = tmp_path / "s.png"
    result = run("inspect", bare, "--contact-sheet", sheet)
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: {bare.resolve()}: the file names no environment to replay it in; "
                                   f"pass --env, e.g. --env Hopper-v5"]
    assert not sheet.exists()
    wrong = run("inspect", bare, "--contact-sheet", sheet, "--env", "HalfCheetah-v5")
    assert wrong.exit_code == 1 and "does not fit HalfCheetah-v5" in error_lines(wrong)[0]
    assert run("inspect", bare, "--contact-sheet", sheet, "--env", "Hopper-v5", "--video-size", SIZE).exit_code == 0
    assert sheet.exists()


def test_episodes_or_env_without_a_media_file_is_refused(hopper_file):
    result = run("inspect", hopper_file, "--episodes", "3")
    assert result.exit_code == 1
    assert error_lines(result) == ["error: --episodes and --env choose what --video / --contact-sheet replay; "
                                   "give one of those too"]


def test_json_reports_the_replay(hopper_file, tmp_path):
    import json

    sheet = tmp_path / "s.png"
    result = run("inspect", hopper_file, "--json", "--contact-sheet", sheet, "--episodes", "5", "--video-size", SIZE)
    assert result.exit_code == 0, result.output
    replay = json.loads(result.stdout)["replay"]
    # More episodes asked for than the file holds: all of them.
    assert replay["episodes"] == [0, 1] and replay["frames"] == sum(LENGTHS)
    assert replay["contact_sheet"] == str(sheet) and replay["env_id"] == "Hopper-v5"
