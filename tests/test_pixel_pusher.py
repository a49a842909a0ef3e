import gymnasium as gym
import numpy as np
import pytest

from envs import register_envs
from envs.experts import PUSHER_INPUT_DIM, PusherExpert
from envs.pixel_pusher import (ENV_ID, GOAL_RADIUS, OBJECT_MASS, SIDE_PIXELS_KEY, STATE_INDICES, TWO_CAMERA_ENV_ID,
                               make_pusher_pixels, object_goal_distance, pusher_expert_input)
from envs.pixels import PIXELS_KEY, STATE_KEY, ExtraViews
from envs.references import reference_scores
from envs.tasks import TASKS
from mtm.rollout import EpisodeRunner, ExpertPolicy, RandomPolicy

SIZE = 32


@pytest.fixture(scope="module")
def env():
    env = make_pusher_pixels(image_size=SIZE)
    env.reset(seed=0)
    yield env
    env.close()


def observe(env, arm, object_xy):
    """The observation of a make_pusher_pixels env with the arm's joints and the object set by hand
    (``object_xy``: the object's offset from its place in the model, the slide joints' positions)."""
    raw = env.unwrapped
    qpos = raw.init_qpos.copy()
    qpos[:7] = arm
    qpos[7], qpos[8] = object_xy[1], object_xy[0]  # obj_slidey, obj_slidex (the model's joint order)
    raw.set_state(qpos, np.zeros(raw.model.nv))
    # PixelObservation(HideObject(ObjectToGoal(PusherEnv))): apply both observation transforms.
    return env.observation(env.env.observation(raw._get_obs()))


def blue_centre(frame):
    """(row, col) centre of the blue object's pixels: the only strongly blue thing in view."""
    frame = frame.astype(int)
    blueness = frame[..., 2] - frame[..., :2].max(-1)
    rows, cols = np.nonzero(blueness > 60)
    assert len(rows) > 0, "the object is not in the frame"
    return rows.mean(), cols.mean()


def test_registered_with_dict_observation_and_pusher_episodes():
    register_envs()
    register_envs()  # idempotent
    made = gym.make(ENV_ID, image_size=24)
    space = made.observation_space
    assert set(space.spaces) == {STATE_KEY, PIXELS_KEY}
    assert space[PIXELS_KEY] == gym.spaces.Box(0, 255, (24, 24, 3), np.uint8)
    assert space[STATE_KEY].shape == (len(STATE_INDICES),) == (17,) and space[STATE_KEY].dtype == np.float32
    assert made.action_space == gym.make("Pusher-v5").action_space
    obs, _ = made.reset(seed=0)
    assert obs in space
    steps, truncated = 0, False
    while not truncated:
        obs, reward, terminated, truncated, info = made.step(made.action_space.sample())
        assert not terminated
        # The reward is Pusher-v5's object-goal term alone; success is the distance in the plane.
        assert reward == pytest.approx(info["reward_dist"]) and info["reward_ctrl"] == 0 == info["reward_near"]
        assert info["is_success"] == (info["object_goal_distance"] < GOAL_RADIUS)
        steps += 1
    assert steps == TASKS[ENV_ID].max_episode_steps == 100
    made.close()


def test_two_cameras_add_a_side_view():
    made = gym.make(TWO_CAMERA_ENV_ID, image_size=16)
    assert set(made.observation_space.spaces) == {STATE_KEY, PIXELS_KEY, SIDE_PIXELS_KEY}
    obs, _ = made.reset(seed=3)
    obs2, *_ = made.step(np.zeros(7, dtype=np.float32))
    assert obs[SIDE_PIXELS_KEY].shape == obs[PIXELS_KEY].shape == (16, 16, 3)
    # Two different views, and the main one is the single-camera env's frame.
    assert np.abs(obs2[SIDE_PIXELS_KEY].astype(int) - obs2[PIXELS_KEY].astype(int)).mean() > 10
    single = gym.make(ENV_ID, image_size=16)
    single.reset(seed=3)
    np.testing.assert_array_equal(single.step(np.zeros(7, dtype=np.float32))[0][PIXELS_KEY], obs2[PIXELS_KEY])
    made.close()
    single.close()


def test_extra_views_refuse_bad_keys_and_views(env):
    with pytest.raises(ValueError, match="view key 'pixels' is already an observation key"):
        ExtraViews(env, {PIXELS_KEY: {"distance": 1.0}})
    with pytest.raises(ValueError, match="must be free-camera settings"):
        ExtraViews(env, {"side": 3})
    with pytest.raises(ValueError, match="wrap a PixelObservation env"):
        ExtraViews(env.env, {"side": {"distance": 1.0}})


def test_state_hides_the_object(env):
    arm = np.array([0.3, 0.5, 0.0, -1.0, 0.0, -0.5, 0.0])
    near = observe(env, arm, (-0.2, -0.1))
    far = observe(env, arm, (0.15, -0.28))
    # Same arm, the object elsewhere: the state cannot tell them apart, the frame can.
    np.testing.assert_array_equal(near[STATE_KEY], far[STATE_KEY])
    assert np.abs(near[PIXELS_KEY].astype(int) - far[PIXELS_KEY].astype(int)).sum() > 0
    full = env.unwrapped._get_obs()  # Pusher-v5's own observation still has it (the last one set)
    np.testing.assert_allclose(full[17:19], [0.45 + 0.15, -0.05 - 0.28])
    np.testing.assert_allclose(far[STATE_KEY], full[list(STATE_INDICES)], rtol=1e-6)
    np.testing.assert_allclose(far[STATE_KEY][:7], arm, atol=1e-6)


def test_the_object_is_seen_where_it_is(env):
    arm = np.zeros(7)  # the arm stretched along +x, above the table: the object stays in view
    left, right = blue_centre(observe(env, arm, (-0.2, -0.2))[PIXELS_KEY]), \
        blue_centre(observe(env, arm, (0.2, -0.2))[PIXELS_KEY])
    low, high = blue_centre(observe(env, arm, (0.0, -0.3))[PIXELS_KEY]), \
        blue_centre(observe(env, arm, (0.0, 0.0))[PIXELS_KEY])
    # From above, +x is to the right and +y up; 0.4 m of table spans about 10 of 32 px.
    assert right[1] - left[1] > 6 and abs(right[0] - left[0]) < 1.5
    assert low[0] - high[0] > 4 and abs(low[1] - high[1]) < 1.5


def test_object_mass_and_colour():
    made = make_pusher_pixels(image_size=8)
    model = made.unwrapped.model
    body = model.body("object").id
    assert model.body_mass[body] == pytest.approx(OBJECT_MASS)
    # The contact softness MuJoCo derives from the mass was recomputed (Pusher-v5's 8e-6 kg: ~1e5).
    assert model.body_invweight0[body, 0] < 1e3
    made.close()


def test_expert_input_and_shape_errors(env):
    env.reset(seed=1)
    row = pusher_expert_input(env)
    assert row.shape == (PUSHER_INPUT_DIM,)
    np.testing.assert_allclose(row[12:15], env.unwrapped.get_body_com("object"))
    with pytest.raises(ValueError, match=r"PusherExpert reads \(B, 74\) rows"):
        PusherExpert()(np.zeros((2, 17)))


def test_expert_pushes_the_object_home_and_random_does_not():
    """A handful of seeds (the reference measurement runs 100): every expert episode ends with the
    object at the goal; random actions end none of them there."""
    episodes = 4
    solved = {}

    def record(index, sub_env):
        solved[index] = object_goal_distance(sub_env) < GOAL_RADIUS

    with EpisodeRunner(ENV_ID, 2, env_kwargs={"image_size": 8}) as runner:
        expert = ExpertPolicy.for_task(TASKS[ENV_ID], runner.envs, runner.action_space)
        returns = [ep.episode_return for _, ep in runner.run(expert, episodes, seed=100, on_step=record)]
        assert all(solved.values()) and len(solved) == episodes
        solved.clear()
        random_returns = [ep.episode_return for _, ep in runner.run(RandomPolicy(runner.action_space), episodes,
                                                                     seed=100, on_step=record)]
        assert not any(solved.values())
    # Same starts: the expert's return is its reference's (within the spread of starts), far above random.
    random_ref, expert_ref = reference_scores(ENV_ID)
    assert abs(np.mean(returns) - expert_ref) < 5 and np.mean(random_returns) < np.mean(returns) - 5


def test_references_and_tasks():
    for env_id in (ENV_ID, TWO_CAMERA_ENV_ID):
        random_ref, expert_ref = reference_scores(env_id)
        assert expert_ref > random_ref
        spec = TASKS[env_id]
        assert spec.expert is PusherExpert and spec.expert_observation is pusher_expert_input
        assert spec.recipe is not None and spec.recipe.command(env_id).startswith(f"mtm collect --env {env_id}")
    assert reference_scores(ENV_ID) == reference_scores(TWO_CAMERA_ENV_ID)  # the same task, one more camera
