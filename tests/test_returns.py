import numpy as np
import pytest

from mtm.data.returns import RTG_KINDS, episodes_returns_to_go, returns_to_go
from mtm.errors import ConfigError

REWARDS = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


def test_sum_includes_the_current_reward():
    out = returns_to_go(REWARDS, "sum")
    assert out.dtype == np.float32 and out.shape == (4,)
    np.testing.assert_array_equal(out, [10.0, 9.0, 7.0, 4.0])


def test_discounted_by_hand():
    out = returns_to_go(REWARDS, "discounted", gamma=0.5)
    # R_3 = 4; R_2 = 3 + 0.5·4 = 5; R_1 = 2 + 0.5·5 = 4.5; R_0 = 1 + 0.5·4.5 = 3.25
    np.testing.assert_allclose(out, [3.25, 4.5, 5.0, 4.0], rtol=1e-7)


def test_discounted_edge_gammas():
    np.testing.assert_allclose(returns_to_go(REWARDS, "discounted", gamma=1.0), [10, 9, 7, 4])
    np.testing.assert_allclose(returns_to_go(REWARDS, "discounted", gamma=0.0), REWARDS)


def test_average_divides_by_steps_left_to_the_horizon():
    out = returns_to_go(REWARDS, "average", horizon=10)
    np.testing.assert_allclose(out, [10 / 10, 9 / 9, 7 / 8, 4 / 7], rtol=1e-6)


def test_average_clamps_the_divisor_past_the_horizon():
    # horizon 2 with 4 steps: divisors 2, 1, then clamped to 1, 1.
    out = returns_to_go(REWARDS, "average", horizon=2)
    np.testing.assert_allclose(out, [5.0, 9.0, 7.0, 4.0])
    assert np.isfinite(out).all()


def test_official_mtm_convention_excludes_the_current_reward():
    np.testing.assert_allclose(returns_to_go(REWARDS, "sum", include_current_reward=False), [9, 7, 4, 0])
    np.testing.assert_allclose(
        returns_to_go(REWARDS, "discounted", gamma=0.5, include_current_reward=False), [4.5, 5.0, 4.0, 0.0]
    )
    # MTM: Σ_{k>t} r_k / (H − t)
    np.testing.assert_allclose(
        returns_to_go(REWARDS, "average", horizon=10, include_current_reward=False),
        [9 / 10, 7 / 9, 4 / 8, 0.0],
    )


@pytest.mark.parametrize("kind", RTG_KINDS)
def test_single_step_and_empty_episodes(kind):
    out = returns_to_go(np.array([2.5], np.float32), kind, gamma=0.9, horizon=1000)
    expected = 2.5 / 1000 if kind == "average" else 2.5
    np.testing.assert_allclose(out, [expected], rtol=1e-6)
    assert returns_to_go(np.zeros(0, np.float32), kind).shape == (0,)


@pytest.mark.parametrize("kind", RTG_KINDS)
@pytest.mark.parametrize("include", [True, False])
def test_many_episodes_at_once_equal_each_episode_alone(kind, include):
    rng = np.random.default_rng(0)
    lengths = np.array([1, 7, 300, 2, 65])
    rewards = rng.normal(size=lengths.sum()).astype(np.float32)
    kwargs = dict(gamma=0.97, horizon=50, include_current_reward=include)
    together = episodes_returns_to_go(rewards, lengths, kind, **kwargs)
    pieces = np.split(rewards, np.cumsum(lengths)[:-1])
    alone = np.concatenate([returns_to_go(p, kind, **kwargs) for p in pieces])
    np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-6)


def test_discounted_scan_matches_a_direct_sum_on_a_long_episode():
    rng = np.random.default_rng(1)
    rewards = rng.uniform(-1, 3, size=2500)
    gamma = 0.995
    out = returns_to_go(rewards, "discounted", gamma=gamma)
    # Direct evaluation at a few steps, from the definition.
    for t in (0, 1, 777, 2048, 2499):
        direct = np.sum(rewards[t:] * gamma ** np.arange(2500 - t))
        np.testing.assert_allclose(out[t], direct, rtol=1e-6)


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="sum, discounted, average"):
        returns_to_go(REWARDS, "mean")
    with pytest.raises(ConfigError, match="gamma"):
        returns_to_go(REWARDS, "discounted", gamma=1.5)
    with pytest.raises(ConfigError, match="horizon"):
        returns_to_go(REWARDS, "average", horizon=0)
