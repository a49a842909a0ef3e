import gymnasium as gym
import numpy as np
import pytest
from click.testing import CliRunner

from envs import register_envs
from envs.experts import ReacherExpert
from envs.pixel_reacher import ENV_ID, STATE_INDICES, TOP_DOWN_CAMERA, make_reacher_pixels, reacher_observation
from envs.pixels import PIXELS_KEY, STATE_KEY
from envs.references import reference_scores
from envs.tasks import TASKS
from mtm.cli import main
from mtm.data.formats.native import NativeSource
from mtm.rollout import EpisodeRunner, ExpertPolicy

SIZE = 32


@pytest.fixture(scope="module")
def env():
    env = make_reacher_pixels(image_size=SIZE)
    env.reset(seed=0)
    yield env
    env.close()


def observe(env, arm, target):
    """The observation of a make_reacher_pixels env with the arm's joint angles and the target set by hand."""
    raw = env.unwrapped
    raw.set_state(np.concatenate([arm, target]), np.zeros(raw.model.nv))
    # PixelObservation(HideTarget(ReacherEnv)): apply both observation transforms to the raw one.
    return env.observation(env.env.observation(raw._get_obs()))


def target_pixel(target, size):
    """(row, col) of a world point in the top-down frame: the view spans +-distance*tan(fovy/2)."""
    half = TOP_DOWN_CAMERA["distance"] * np.tan(np.radians(45.0 / 2))  # Reacher's free camera: fovy 45
    return (1 - target[1] / half) / 2 * size, (target[0] / half + 1) / 2 * size


def test_registered_with_dict_observation_and_reacher_episodes():
    register_envs()
    register_envs()  # idempotent
    made = gym.make(ENV_ID, image_size=24)
    space = made.observation_space
    assert space[PIXELS_KEY] == gym.spaces.Box(0, 255, (24, 24, 3), np.uint8)
    assert space[STATE_KEY].shape == (len(STATE_INDICES),) == (6,) and space[STATE_KEY].dtype == np.float32
    assert made.action_space == gym.make("Reacher-v5").action_space
    obs, _ = made.reset(seed=0)
    assert obs in space
    steps, truncated = 0, False
    while not truncated:
        obs, _, terminated, truncated, _ = made.step(made.action_space.sample())
        assert not terminated
        steps += 1
    assert steps == TASKS[ENV_ID].max_episode_steps == 50
    made.close()


def test_state_is_reacher_without_the_target(env):
    arm = np.array([0.4, -1.1])
    near = observe(env, arm, np.array([0.1, 0.05]))
    far = observe(env, arm, np.array([-0.12, -0.1]))
    # Same arm, different target: the state cannot tell them apart.
    np.testing.assert_array_equal(near[STATE_KEY], far[STATE_KEY])
    full = reacher_observation(env)  # the privileged view still has the target (the last one set)
    np.testing.assert_allclose(full[4:6], [-0.12, -0.1])
    np.testing.assert_allclose(near[STATE_KEY], full[list(STATE_INDICES)], rtol=1e-6)
    np.testing.assert_allclose(near[STATE_KEY][:4], [np.cos(0.4), np.cos(-1.1), np.sin(0.4), np.sin(-1.1)], rtol=1e-6)


def test_target_is_visible_where_it_is(env):
    arm = np.array([0.0, 0.0])  # pointing along +x, away from both targets
    for target in (np.array([-0.1, 0.12]), np.array([-0.05, -0.15])):
        frame = observe(env, arm, target)[PIXELS_KEY].astype(int)
        redness = frame[..., 0] - frame[..., 1:].max(-1)  # the target is the only red thing in view
        row, col = np.unravel_index(np.argmax(redness), redness.shape)
        expected = target_pixel(target, SIZE)
        assert abs(row - expected[0]) <= 1.5 and abs(col - expected[1]) <= 1.5
        assert redness.max() > 40
    a = observe(env, arm, np.array([-0.1, 0.12]))[PIXELS_KEY]
    b = observe(env, arm, np.array([-0.05, -0.15]))[PIXELS_KEY]
    assert np.abs(a.astype(int) - b.astype(int)).sum() > 0


def test_privileged_expert_matches_the_reacher_expert():
    """The same seeds give Reacher-v5's trajectories: the expert sees the target through the
    simulator. The reward differs: 1 per step on the target disc, so only seeing policies score."""
    seeds = 4
    with EpisodeRunner(ENV_ID, 2, env_kwargs={"image_size": 16}) as runner:
        policy = ExpertPolicy.for_task(TASKS[ENV_ID], runner.envs, runner.action_space)
        pixel_episodes = [ep for _, ep in runner.run(policy, seeds, seed=0)]
    with EpisodeRunner("Reacher-v5", 2) as runner:
        policy = ExpertPolicy(ReacherExpert(), runner.action_space)
        state_episodes = [ep for _, ep in runner.run(policy, seeds, seed=0)]
    for pix, st in zip(pixel_episodes, state_episodes):
        np.testing.assert_allclose(pix.actions, st.actions, rtol=1e-5, atol=1e-6)
        distance = np.linalg.norm(st.observations[STATE_KEY][1:, 8:10], axis=1)  # fingertip - target
        np.testing.assert_array_equal(pix.rewards, (distance < 0.02).astype(np.float32))
    random_return, expert_return = reference_scores(ENV_ID)
    assert np.mean([ep.episode_return for ep in pixel_episodes]) > 25 and random_return < 1 and expert_return > 30


def test_collect_expert_from_the_cli(tmp_path):
    out = tmp_path / "pixels.hdf5"
    result = CliRunner().invoke(main, ["collect", "--no-progress", "--env", ENV_ID, "--policy", "expert",
                                       "--episodes", "2", "--num-envs", "2", "--output", str(out)])
    assert result.exit_code == 0, result.output
    with NativeSource(out) as src:
        assert src.info.env_id == ENV_ID and src.info.ref_max_score == reference_scores(ENV_ID)[1]
        episode = src.episode(0)
    assert episode.observations[PIXELS_KEY].shape == (51, 64, 64, 3)
    assert episode.observations[STATE_KEY].shape == (51, 6)
    assert episode.episode_return > 20  # steps on the target, of 50
