import gymnasium as gym
import numpy as np
import pytest

from envs.experts import ReacherExpert
from mtm.data.episode import STATE_KEY
from mtm.errors import ConfigError
from mtm.rollout import EpisodeRunner, ExpertPolicy, PixelSpec, RandomPolicy, check_env_id

COUNTDOWN_ID = "mtm-test/Countdown-v0"


class Countdown(gym.Env):
    """Episodes of 1..6 steps (set by the reset seed) that terminate; obs = [steps left, seed]."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.left = 1 + int(self.np_random.integers(6))
        self.seed_value = float(seed)
        return np.array([self.left, self.seed_value]), {}

    def step(self, action):
        self.left -= 1
        reward = float(action[0]) + self.seed_value
        return np.array([self.left, self.seed_value]), reward, self.left == 0, False, {}


@pytest.fixture(scope="module", autouse=True)
def countdown_env():
    gym.register(COUNTDOWN_ID, entry_point=Countdown, disable_env_checker=True)
    yield
    gym.registry.pop(COUNTDOWN_ID)


class ConstantPolicy:
    def __init__(self, value=0.5):
        self.value = value
        self.resets = []

    def reset(self, env_indices, episode_indices):
        self.resets.append((list(env_indices), list(episode_indices)))

    def act(self, observations):
        return np.full((observations.shape[0], 1), self.value, np.float32)


def count_env_steps(runner):
    calls = {"n": 0}
    for env in runner.envs:
        inner = env.step

        def step(action, inner=inner):
            calls["n"] += 1
            return inner(action)

        env.step = step
    return calls


@pytest.mark.parametrize("num_envs", [1, 3, 4, 10])
def test_exactly_n_episodes_and_no_extra_steps(num_envs):
    with EpisodeRunner(COUNTDOWN_ID, num_envs) as runner:
        calls = count_env_steps(runner)
        results = list(runner.run(ConstantPolicy(), num_episodes=7, seed=100))
    indices = [i for i, _ in results]
    assert sorted(indices) == list(range(7))
    lengths = [ep.length for _, ep in results]
    assert calls["n"] == sum(lengths) == runner.stats.steps  # finished envs were never stepped again
    assert runner.stats.episodes == 7 and runner.stats.steps_per_s > 0
    for i, ep in results:
        assert ep.seed == 100 + i
        ep.validate()
        assert ep.terminated and not ep.truncated
        assert ep.observations[STATE_KEY].shape == (ep.length + 1, 2)
        assert ep.observations[STATE_KEY][-1, 0] == 0  # the final observation, after the last action
        assert np.all(ep.observations[STATE_KEY][:, 1] == 100 + i)  # never mixed with another episode


def test_results_do_not_depend_on_the_number_of_envs():
    by_k = {}
    for k in (1, 4):
        with EpisodeRunner(COUNTDOWN_ID, k) as runner:
            by_k[k] = {i: (ep.length, ep.episode_return) for i, ep in runner.run(ConstantPolicy(), 9, seed=3)}
    assert by_k[1] == by_k[4]


def test_policy_is_told_which_episode_each_env_starts():
    policy = ConstantPolicy()
    with EpisodeRunner(COUNTDOWN_ID, 3) as runner:
        list(runner.run(policy, 5, seed=0))
    assert policy.resets[0] == ([0, 1, 2], [0, 1, 2])
    started = [e for _, episodes in policy.resets for e in episodes]
    assert started == list(range(5))


def test_on_step_sees_every_reset_and_step():
    seen = []
    with EpisodeRunner(COUNTDOWN_ID, 2) as runner:
        results = list(runner.run(ConstantPolicy(), 3, seed=0, on_step=lambda i, env: seen.append(i)))
    for i, ep in results:
        assert seen.count(i) == ep.length + 1


def test_zero_episodes_and_bad_actions():
    with EpisodeRunner(COUNTDOWN_ID, 2) as runner:
        assert list(runner.run(ConstantPolicy(), 0, seed=0)) == []
        with pytest.raises(ValueError, match="shape"):
            list(runner.run(_WrongShapePolicy(), 2, seed=0))


class _WrongShapePolicy(ConstantPolicy):
    def act(self, observations):
        return np.zeros((1, 3), np.float32)


def reacher_returns(policy_factory, num_envs, episodes=6, seed=10):
    with EpisodeRunner("Reacher-v5", num_envs) as runner:
        results = dict(runner.run(policy_factory(runner.action_space), episodes, seed))
    return results


def test_reacher_expert_returns_equal_for_one_and_four_envs():
    one = reacher_returns(lambda space: ExpertPolicy(ReacherExpert(), space), 1)
    four = reacher_returns(lambda space: ExpertPolicy(ReacherExpert(), space), 4)
    assert sorted(one) == sorted(four) == list(range(6))
    for i in one:
        assert one[i].episode_return == pytest.approx(four[i].episode_return, abs=1e-9)
        assert one[i].seed == 10 + i


def test_seeded_noise_is_per_episode_so_random_and_noisy_data_ignore_k():
    for factory in (
        lambda space: RandomPolicy(space, seed=5),
        lambda space: ExpertPolicy(ReacherExpert(), space, noise_std=0.3, seed=5),
    ):
        one, three = reacher_returns(factory, 1), reacher_returns(factory, 3)
        for i in one:
            np.testing.assert_array_equal(one[i].actions, three[i].actions)


def test_reacher_episode_replays_exactly_including_the_final_observation():
    episode = reacher_returns(lambda space: ExpertPolicy(ReacherExpert(), space, noise_std=0.2), 2)[3]
    assert episode.length == 50 and episode.truncated and not episode.terminations.any()
    env = gym.make("Reacher-v5")
    obs, _ = env.reset(seed=episode.seed)
    np.testing.assert_array_equal(obs, episode.observations[STATE_KEY][0])
    for t, action in enumerate(episode.actions):
        obs, reward, *_ = env.step(action)
        np.testing.assert_array_equal(obs, episode.observations[STATE_KEY][t + 1])
        assert reward == episode.rewards[t]
    env.close()


def test_expert_noise_is_bounded_and_scheduled_per_episode():
    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    policy = ExpertPolicy(lambda obs: np.full((obs.shape[0], 2), 0.9), space, noise_std=lambda i: [0.0, 2.0][i], seed=0)
    policy.reset(np.array([0, 1]), np.array([0, 1]))
    actions = np.stack([policy.act(np.zeros((2, 10))) for _ in range(20)])
    np.testing.assert_array_equal(actions[:, 0], np.float32(0.9))  # episode 0: no noise
    assert np.all(np.abs(actions) <= 1.0) and actions[:, 1].std() > 0.3


def test_pixel_episodes_hold_frames():
    with EpisodeRunner("Reacher-v5", 2, pixels=PixelSpec(size=16)) as runner:
        assert runner.observation_space["pixels"].shape == (16, 16, 3)
        results = list(runner.run(RandomPolicy(runner.action_space, seed=0), 3, seed=0))
    assert len(results) == 3
    for _, ep in results:
        assert ep.observations["pixels"].shape == (51, 16, 16, 3)
        assert ep.observations["pixels"].dtype == np.uint8
        assert ep.observations[STATE_KEY].shape == (51, 10)


def test_unknown_env_ids_get_suggestions():
    check_env_id("Reacher-v5")
    with pytest.raises(ConfigError, match="did you mean Reacher-v5"):
        check_env_id("reacher-v5")
    with pytest.raises(ConfigError, match="unknown environment id 'Reacher-v99'"):
        check_env_id("Reacher-v99")
    with pytest.raises(ConfigError):
        EpisodeRunner("NoSuchThing-v0", 2)
    with pytest.raises(ConfigError, match="positive"):
        EpisodeRunner("Reacher-v5", 0)
