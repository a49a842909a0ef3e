import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from envs.experts import REACHER_LINK_LENGTHS, ReacherExpert
from envs.pixels import PIXELS_KEY, STATE_KEY, PixelObservation
from envs.tasks import make_pixel_env
from envs.references import reference_scores
from envs.tasks import TASKS, envs_with_expert


def forward_kinematics(q: np.ndarray) -> np.ndarray:
    l1, l2 = REACHER_LINK_LENGTHS
    return np.stack(
        [l1 * np.cos(q[:, 0]) + l2 * np.cos(q[:, 0] + q[:, 1]), l1 * np.sin(q[:, 0]) + l2 * np.sin(q[:, 0] + q[:, 1])],
        axis=1,
    )


def observations_at(env, qpos_rows: np.ndarray) -> np.ndarray:
    """Reacher observations for arbitrary joint angles and target positions (via set_state)."""
    raw = env.unwrapped
    rows = []
    for qpos in qpos_rows:
        raw.set_state(qpos, np.zeros(raw.model.nv))
        rows.append(raw._get_obs())
    return np.stack(rows)


@pytest.fixture(scope="module")
def reacher():
    env = gym.make("Reacher-v5")
    env.reset(seed=0)
    yield env
    env.close()


def test_link_lengths_match_the_compiled_model_and_its_kinematics(reacher):
    model = reacher.unwrapped.model
    assert model.body("body1").pos[0] == pytest.approx(REACHER_LINK_LENGTHS[0])
    assert model.body("fingertip").pos[0] == pytest.approx(REACHER_LINK_LENGTHS[1])
    rng = np.random.default_rng(0)
    qpos = np.column_stack([rng.uniform(-np.pi, np.pi, 20), rng.uniform(-3, 3, 20), rng.uniform(-0.2, 0.2, (20, 2))])
    obs = observations_at(reacher, qpos)
    fingertip = obs[:, 8:10] + obs[:, 4:6]  # (fingertip - target) + target
    np.testing.assert_allclose(forward_kinematics(qpos[:, :2]), fingertip, atol=1e-9)


def test_inverse_kinematics_puts_the_fingertip_on_every_reachable_target(reacher):
    rng = np.random.default_rng(1)
    radius = rng.uniform(0.02, 0.2, 50)
    angle = rng.uniform(-np.pi, np.pi, 50)
    targets = np.column_stack([radius * np.cos(angle), radius * np.sin(angle)])
    qpos = np.column_stack([rng.uniform(-np.pi, np.pi, 50), rng.uniform(-3, 3, 50), targets])
    obs = observations_at(reacher, qpos)
    q = qpos[:, :2]
    solution = q + ReacherExpert().joint_errors(obs)
    np.testing.assert_allclose(forward_kinematics(solution), targets, atol=1e-9)
    assert np.all(np.abs(solution[:, 1]) <= 3.0)


def test_expert_is_vectorised_bounded_and_deterministic(reacher):
    rng = np.random.default_rng(2)
    qpos = np.column_stack([rng.uniform(-np.pi, np.pi, 16), rng.uniform(-3, 3, 16), rng.uniform(-0.14, 0.14, (16, 2))])
    obs = observations_at(reacher, qpos)
    obs[:, 6:8] = rng.normal(scale=5.0, size=(16, 2))
    expert = ReacherExpert()
    batch = expert(obs)
    assert batch.shape == (16, 2) and batch.dtype == np.float32
    assert np.all(np.abs(batch) <= 1.0)
    rows = np.concatenate([expert(obs[i : i + 1]) for i in range(16)])
    np.testing.assert_allclose(batch, rows, atol=1e-7)


def test_expert_is_near_optimal_and_far_better_than_random():
    env = gym.make("Reacher-v5")
    expert = ReacherExpert()
    returns = []
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(expert(obs[None])[0])
            total += reward
            done = terminated or truncated
        returns.append(total)
    env.close()
    random_return, expert_return = reference_scores("Reacher-v5")
    assert np.mean(returns) > -5.0  # measured reference over seeds 0..99: -3.55
    assert random_return < -40.0 and expert_return > -4.0


def test_task_registry_describes_reacher():
    spec = TASKS["Reacher-v5"]
    assert spec.max_episode_steps == gym.spec("Reacher-v5").max_episode_steps == 50
    assert spec.expert is not None and isinstance(spec.expert(), ReacherExpert)
    assert spec.references == reference_scores("Reacher-v5")
    assert envs_with_expert() == ["Reacher-v5", "mtm/PusherPixels-v0", "mtm/PusherPixels2Cam-v0", "mtm/ReacherPixels-v0"]
    command = spec.recipe.command("Reacher-v5")
    assert command.startswith("mtm collect --env Reacher-v5 --policy expert --episodes 2000")
    assert "--noise 0,0.1,0.3,0.5" in command


@pytest.fixture(scope="module")
def pixel_env():
    env = make_pixel_env("Reacher-v5", size=32)
    yield env
    env.close()


def test_pixel_observation_spaces_and_frames(pixel_env):
    space = pixel_env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    assert space[PIXELS_KEY] == gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    assert space[STATE_KEY].dtype == np.float32 and space[STATE_KEY].shape == (10,)
    obs, _ = pixel_env.reset(seed=0)
    assert obs in space
    assert obs[PIXELS_KEY].shape == (32, 32, 3) and obs[PIXELS_KEY].dtype == np.uint8
    assert obs[PIXELS_KEY].std() > 0  # not a blank frame


def test_frames_follow_the_state(pixel_env):
    first, _ = pixel_env.reset(seed=0)
    again, _ = pixel_env.reset(seed=0)
    np.testing.assert_array_equal(first[PIXELS_KEY], again[PIXELS_KEY])
    moved = first
    for _ in range(5):
        moved, *_ = pixel_env.step(np.array([1.0, 1.0], np.float32))
    assert not np.array_equal(first[STATE_KEY], moved[STATE_KEY])
    assert np.abs(first[PIXELS_KEY].astype(int) - moved[PIXELS_KEY].astype(int)).sum() > 0
    other, _ = pixel_env.reset(seed=1)  # another target position and arm pose
    assert not np.array_equal(first[PIXELS_KEY], other[PIXELS_KEY])


def test_pixel_env_works_in_a_sync_vector_env():
    envs = gym.vector.SyncVectorEnv([lambda: make_pixel_env("Reacher-v5", size=24) for _ in range(2)])
    obs, _ = envs.reset(seed=0)
    assert obs[PIXELS_KEY].shape == (2, 24, 24, 3) and obs[PIXELS_KEY].dtype == np.uint8
    obs, *_ = envs.step(envs.action_space.sample())
    assert obs[STATE_KEY].shape == (2, 10) and obs[STATE_KEY].dtype == np.float32
    envs.close()


def test_pixel_wrapper_rejects_what_it_cannot_render():
    env = gym.make("Reacher-v5")  # no render_mode
    with pytest.raises(ValueError, match="rgb_array"):
        PixelObservation(env)
    env.close()
    with pytest.raises(ValueError, match="no camera named 'nope'"):
        make_pixel_env("Reacher-v5", size=16, camera="nope")
    with pytest.raises(ValueError, match="MuJoCo"):
        PixelObservation(gym.make("CartPole-v1", render_mode="rgb_array"))


def test_headless_rendering_default_keeps_a_users_choice(monkeypatch):
    from envs import headless_rendering_default

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    headless_rendering_default()
    assert __import__("os").environ["MUJOCO_GL"] == "egl"
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    headless_rendering_default()
    assert __import__("os").environ["MUJOCO_GL"] == "osmesa"


_BACKEND_AFTER_IMPORT = """
import os, sys
import {module}
chosen = [name for name in ("egl", "osmesa", "glfw") if "mujoco." + name in sys.modules]
print(os.environ.get("MUJOCO_GL"), chosen[0] if chosen else None)
"""


@pytest.mark.parametrize("module", ["mtm.video", "envs.camera", "mtm.evaluation.rollouts"])
@pytest.mark.parametrize("display", [None, ":0"])
def test_the_headless_default_is_set_before_any_module_imports_mujoco(module, display):
    """MuJoCo picks its GL backend once, when first imported. Whichever module a library caller
    imports first, MUJOCO_GL's default (EGL without a display) is in place by then, whatever
    order its imports are sorted in."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}
    if display is not None:
        env["DISPLAY"] = display
    proc = subprocess.run([sys.executable, "-c", _BACKEND_AFTER_IMPORT.format(module=module)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    variable, backend = proc.stdout.split()
    if display is None:
        assert (variable, backend) == ("egl", "egl")
    else:  # a display: MuJoCo's own default (GLFW), the variable left unset
        assert (variable, backend) == ("None", "glfw")


REPO = Path(__file__).resolve().parents[1]


def _run_python(code: str, cwd) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter run from `cwd` (not the checkout), the checkout importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_halfcheetah_is_made_without_mujocos_deprecation_lines_or_a_log_file(tmp_path):
    # gymnasium's HalfCheetah-v5 model uses MuJoCo's deprecated `settotalmass`: without mtm's handler
    # each env made prints it to stderr and appends it to MUJOCO_LOG.TXT in the current directory.
    done = _run_python("from mtm.rollout import make_env\n"
                       "env = make_env('HalfCheetah-v5'); env.reset(seed=0); print('made')", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "made"
    assert "settotalmass" not in done.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_other_mujoco_warnings_become_python_warnings():
    from envs.mujoco_warnings import _to_python_warning

    with pytest.warns(RuntimeWarning, match="^MuJoCo: Nan, Inf or huge value in QACC"):
        _to_python_warning("Nan, Inf or huge value in QACC at DOF 0. The simulation is unstable.")


def test_a_users_own_mujoco_warning_handler_is_kept(tmp_path):
    done = _run_python("import mujoco\n"
                       "mine = lambda message: None\n"
                       "mujoco.set_mju_user_warning(mine)\n"
                       "from envs import register_envs\n"
                       "register_envs()\n"
                       "print(mujoco.get_mju_user_warning() is mine)", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
