import json

import h5py
import numpy as np
import pytest

from mtm.data.episode import STATE_KEY, DatasetInfo, Episode, EpisodeSource
from mtm.data.formats.d4rl import D4RLSource
from mtm.data.formats.native import EpisodeWriter, NativeSource
from mtm.data.returns import returns_to_go
from mtm.data.stats import ModalityStats
from mtm.data.trajectories import Trajectories, load_trajectories
from mtm.errors import ConfigError, DataError

INFO = DatasetInfo(source_format="test", source="memory")


class ListSource(EpisodeSource):
    """An in-memory EpisodeSource."""

    def __init__(self, episodes: list[Episode]) -> None:
        self.episodes = episodes
        self.info = INFO
        self.requested: list = []  # the `keys` of every episode() call

    def __len__(self) -> int:
        return len(self.episodes)

    def episode(self, index: int, keys=None) -> Episode:
        self.requested.append(keys)
        episode = self.episodes[index]
        if keys is None:
            return episode
        return Episode({k: episode.observations[k] for k in keys if k in episode.observations},
                       episode.actions, episode.rewards, episode.terminations, episode.truncations)


class EpisodesOnly(EpisodeSource):
    """Hides a source's flat_arrays() so that load_trajectories takes the episode-by-episode path."""

    def __init__(self, inner: EpisodeSource) -> None:
        self.inner = inner
        self.info = inner.info

    def __len__(self) -> int:
        return len(self.inner)

    def episode(self, index: int, keys=None) -> Episode:
        return self.inner.episode(index, keys=keys)


def coded_episode(e: int, t: int, image: bool = False) -> Episode:
    """Values encode (episode e, step s): 'pos' = [1000e + s, -s], 'vel' = [e]; T+1 observation rows."""
    steps = np.arange(t + 1, dtype=np.float32)
    obs = {
        "pos": np.stack([1000 * e + steps, -steps], axis=1),
        "vel": np.full((t + 1, 1), e, np.float32),
    }
    if image:
        obs["pixels"] = np.zeros((t + 1, 4, 4, 3), np.uint8)
    rewards = (e + 1 + np.arange(t, dtype=np.float32) / 10).astype(np.float32)
    done = np.zeros(t, bool)
    done[-1] = True
    actions = np.stack([steps[:t], steps[:t] + 0.5], axis=1) + 100 * e
    return Episode(obs, actions, rewards, done, np.zeros(t, bool))


def coded_trajectories(lengths, **kwargs) -> Trajectories:
    return load_trajectories(ListSource([coded_episode(e, t) for e, t in enumerate(lengths)]), **kwargs)


def write_d4rl(path, lengths, ends=("terminal",), partial: int = 0, obs_dim: int = 3) -> None:
    """A D4RL-layout file with the given episodes plus a trailing partial episode of `partial` steps."""
    n = sum(lengths) + partial
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    end = 0
    for i, t in enumerate(lengths):
        end += t
        (terminals if ends[i % len(ends)] == "terminal" else timeouts)[end - 1] = True
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(n, obs_dim)).astype(np.float32)
        f["next_observations"] = rng.normal(size=(n, obs_dim)).astype(np.float32)
        f["actions"] = rng.normal(size=(n, 2)).astype(np.float32)
        f["rewards"] = rng.uniform(0, 1, size=n).astype(np.float32)
        f["terminals"] = terminals
        f["timeouts"] = timeouts


# -- loading ---------------------------------------------------------------------------------------


def test_load_concatenates_sorted_low_dim_keys_and_drops_final_observations():
    lengths = [3, 1, 5]
    data = load_trajectories(ListSource([coded_episode(e, t, image=True) for e, t in enumerate(lengths)]),
                             rtg="sum")
    assert data.num_episodes == 3 and data.num_steps == 9
    assert data.state_keys == ["pos", "vel"]  # images excluded
    assert data.state_dim == 3 and data.action_dim == 2
    np.testing.assert_array_equal(data.starts, [0, 3, 4])
    np.testing.assert_array_equal(data.lengths, lengths)
    np.testing.assert_array_equal(data.arrays["timesteps"], [0, 1, 2, 0, 0, 1, 2, 3, 4])
    assert data.arrays["timesteps"].dtype == np.int64
    for key in ("states", "actions", "rewards", "returns"):
        assert data.arrays[key].dtype == np.float32 and data.arrays[key].ndim == 2
    # Row i of episode e holds state [1000e + i, -i, e]: the (T+1)-th observation is not there.
    episode_of_row = np.repeat(np.arange(3), lengths)
    expected = np.stack([1000 * episode_of_row + data.arrays["timesteps"], -data.arrays["timesteps"],
                         episode_of_row], axis=1)
    np.testing.assert_array_equal(data.arrays["states"], expected)
    for e in range(3):
        rows = slice(data.starts[e], data.starts[e] + data.lengths[e])
        rewards = coded_episode(e, lengths[e]).rewards
        np.testing.assert_array_equal(data.arrays["rewards"][rows, 0], rewards)
        np.testing.assert_allclose(data.arrays["returns"][rows, 0], returns_to_go(rewards, "sum"))
    assert data.rtg == {"kind": "sum", "gamma": 0.99, "horizon": 1000, "include_current_reward": True}
    assert data.info is INFO


def test_episode_returns_are_undiscounted_totals():
    data = coded_trajectories([3, 1, 5])
    expected = [coded_episode(e, t).episode_return for e, t in enumerate([3, 1, 5])]
    np.testing.assert_allclose(data.episode_returns(), expected)
    assert data.episode_returns().dtype == np.float64


def test_state_keys_choice_and_errors():
    source = ListSource([coded_episode(0, 4, image=True), coded_episode(1, 2, image=True)])
    data = load_trajectories(source, state_keys=["vel"])
    assert data.state_keys == ["vel"] and data.state_dim == 1
    # Only the first episode is read whole; the rest are asked for the chosen keys, never the images.
    assert source.requested == [None, ["vel"]]
    assert load_trajectories(source, state_keys=["vel", "pos"]).state_keys == ["pos", "vel"]
    with pytest.raises(DataError, match="speed.*pos, vel"):
        load_trajectories(source, state_keys=["speed"])
    with pytest.raises(DataError, match="pixels"):
        load_trajectories(source, state_keys=["pixels"])  # an image is not a state
    with pytest.raises(ConfigError):
        load_trajectories(source, state_keys=[])
    with pytest.raises(ConfigError, match="sum, discounted, average"):
        load_trajectories(source, rtg="median")


def test_image_only_and_empty_datasets_are_data_errors():
    t = 3
    only_images = Episode({"pixels": np.zeros((t, 4, 4, 3), np.uint8)}, np.zeros((t, 1), np.float32),
                          np.zeros(t, np.float32), np.zeros(t, bool), np.zeros(t, bool))
    with pytest.raises(DataError, match="no low-dimensional observation"):
        load_trajectories(ListSource([only_images]))
    with pytest.raises(DataError, match="no episodes"):
        load_trajectories(ListSource([]))


def test_mismatched_observation_keys_are_a_data_error():
    other = coded_episode(1, 2)
    del other.observations["vel"]
    with pytest.raises(DataError, match="episode 1 lacks observation key.* vel"):
        load_trajectories(ListSource([coded_episode(0, 2), other]))


def test_d4rl_trailing_partial_episode_is_kept_and_flat_path_matches_episode_path(tmp_path):
    path = tmp_path / "flat.hdf5"
    write_d4rl(path, [4, 2, 6], ends=("terminal", "timeout"), partial=3)
    with D4RLSource(path) as src:
        flat = load_trajectories(src, rtg="average", rtg_horizon=5)
        slow = load_trajectories(EpisodesOnly(src), rtg="average", rtg_horizon=5)
        raw = src.flat_arrays()
        np.testing.assert_array_equal(flat.lengths, [4, 2, 6, 3])
        assert flat.num_steps == 15 and flat.state_keys == [STATE_KEY]
        for key in flat.arrays:
            np.testing.assert_array_equal(flat.arrays[key], slow.arrays[key], err_msg=key)
        np.testing.assert_array_equal(flat.arrays["states"], raw.observations)
        # Returns restart at each episode: the last step of every episode sees only its own reward
        # (the 6-step episode outlives the horizon of 5, so its divisor is clamped to 1).
        last_rows = flat.starts + flat.lengths - 1
        divisor = np.maximum(5 - flat.arrays["timesteps"][last_rows], 1)
        np.testing.assert_allclose(flat.arrays["returns"][last_rows, 0], raw.rewards[last_rows] / divisor,
                                   rtol=1e-6)
        # The training arrays are copies: changing them leaves the source's cache alone.
        flat.arrays["states"][:] = 0
        flat.arrays["rewards"][:] = 0
        assert np.abs(raw.observations).sum() > 0 and raw.rewards.sum() > 0
    by_path = load_trajectories(path, rtg="average", rtg_horizon=5)  # opened with open_dataset, then closed
    for key in slow.arrays:
        np.testing.assert_array_equal(by_path.arrays[key], slow.arrays[key], err_msg=key)
    assert by_path.info.source_format == "d4rl"


def test_native_file_loads_like_the_episodes_written(tmp_path):
    episodes = [coded_episode(e, t, image=True) for e, t in enumerate([2, 5, 1])]
    path = tmp_path / "native.hdf5"
    with EpisodeWriter(path, DatasetInfo(source_format="native", source="test")) as writer:
        for episode in episodes:
            writer.add(episode)
    with NativeSource(path) as src:
        from_file = load_trajectories(src, rtg="discounted", gamma=0.9)
    in_memory = load_trajectories(ListSource(episodes), rtg="discounted", gamma=0.9)
    for key in in_memory.arrays:
        np.testing.assert_array_equal(from_file.arrays[key], in_memory.arrays[key])


def test_shared_hopper_file_loads_every_episode(shared_datasets):
    summary = json.loads((shared_datasets / "summary.json").read_text())["hopper-medium-v5"]
    data = load_trajectories(shared_datasets / "hopper-medium-v5.hdf5", format="d4rl")
    assert data.num_episodes == summary["episodes"] and data.num_steps == summary["steps"]
    assert data.state_dim == 11 and data.action_dim == 3
    np.testing.assert_allclose(data.episode_returns().mean(), summary["return_mean"], rtol=1e-6)
    # The file's last episode is cut short by the 100k limit and still counts.
    assert data.starts[-1] + data.lengths[-1] == data.num_steps


# -- select / split --------------------------------------------------------------------------------


def test_select_copies_the_chosen_episodes_in_the_given_order():
    data = coded_trajectories([3, 1, 5, 2])
    part = data.select([2, 0])
    np.testing.assert_array_equal(part.lengths, [5, 3])
    np.testing.assert_array_equal(part.starts, [0, 5])
    np.testing.assert_array_equal(part.episode_ids, [2, 0])
    np.testing.assert_array_equal(part.arrays["states"][:5, 2], 2)  # 'vel' holds the episode number
    np.testing.assert_array_equal(part.arrays["states"][5:, 2], 0)
    np.testing.assert_array_equal(part.arrays["timesteps"], [0, 1, 2, 3, 4, 0, 1, 2])
    np.testing.assert_array_equal(part.arrays["returns"][:5], data.arrays["returns"][4:9])
    # Everything, in order: an identical copy that does not share memory.
    whole = data.select(range(4))
    for key in data.arrays:
        np.testing.assert_array_equal(whole.arrays[key], data.arrays[key])
        assert not np.shares_memory(whole.arrays[key], data.arrays[key])
    empty = data.select([])
    assert empty.num_episodes == 0 and empty.num_steps == 0 and empty.episode_returns().shape == (0,)
    with pytest.raises(IndexError):
        data.select([4])


def test_split_is_by_episode_seeded_disjoint_covering_and_shuffled():
    lengths = np.arange(1, 41)
    data = coded_trajectories(lengths)
    train, val = data.split(0.2, seed=0)
    assert val.num_episodes == 8 and train.num_episodes == 32
    ids = np.concatenate([train.episode_ids, val.episode_ids])
    np.testing.assert_array_equal(np.sort(ids), np.arange(40))  # disjoint and covering
    assert train.num_steps + val.num_steps == data.num_steps
    # Whole episodes moved intact, and each part keeps the dataset's order.
    for part in (train, val):
        assert np.all(np.diff(part.episode_ids) > 0)
        np.testing.assert_array_equal(part.lengths, lengths[part.episode_ids])
        np.testing.assert_array_equal(part.arrays["states"][part.starts, 2], part.episode_ids)
    # Not the official "last episodes are validation" split.
    assert not np.array_equal(val.episode_ids, np.arange(32, 40))
    # Deterministic per seed, different across seeds.
    again_train, again_val = data.split(0.2, seed=0)
    np.testing.assert_array_equal(again_val.episode_ids, val.episode_ids)
    np.testing.assert_array_equal(again_val.arrays["states"], val.arrays["states"])
    assert not np.array_equal(data.split(0.2, seed=1)[1].episode_ids, val.episode_ids)
    # Re-joining the parts by episode id gives back the original arrays.
    rejoined_ids = np.concatenate([train.episode_ids, val.episode_ids])
    both = {k: np.concatenate([train.arrays[k], val.arrays[k]]) for k in data.arrays}
    joined = Trajectories(both, np.concatenate([[0], np.cumsum(lengths[rejoined_ids])[:-1]]),
                          lengths[rejoined_ids], data.info, data.state_keys, data.rtg, rejoined_ids)
    restored = joined.select(np.argsort(rejoined_ids))
    for key in data.arrays:
        np.testing.assert_array_equal(restored.arrays[key], data.arrays[key])


def test_split_edge_cases():
    one = coded_trajectories([7])
    train, val = one.split(0.5, seed=0)
    assert train.num_episodes == 1 and val.num_episodes == 0
    three = coded_trajectories([2, 3, 4])
    train, val = three.split(0.0, seed=0)
    assert train.num_episodes == 3 and val.num_episodes == 0
    train, val = three.split(0.01, seed=0)  # rounds to 0, but a requested validation set is never empty
    assert val.num_episodes == 1 and train.num_episodes == 2
    train, val = three.split(0.99, seed=0)  # training keeps at least one episode
    assert val.num_episodes == 2 and train.num_episodes == 1
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="validation fraction"):
            three.split(bad, seed=0)


# -- statistics ------------------------------------------------------------------------------------


def test_stats_are_over_real_rows_of_the_split_only():
    data = coded_trajectories([1, 9, 2, 30, 4])
    train, _ = data.split(0.4, seed=3)
    stats = train.stats()
    assert set(stats) == {"states", "actions", "returns", "rewards"}
    for key, s in stats.items():
        rows = train.arrays[key].astype(np.float64)
        np.testing.assert_allclose(s.mean, rows.mean(axis=0), rtol=1e-6)
        np.testing.assert_allclose(s.std, rows.std(axis=0), rtol=1e-6)
        np.testing.assert_array_equal(s.min, rows.min(axis=0))
        np.testing.assert_array_equal(s.max, rows.max(axis=0))
        assert s.count == train.num_steps and s.mean.dtype == np.float32 and s.mean.shape == (rows.shape[1],)
    # Zero-padding the episodes to a common length (the official code's mistake) would change them.
    padded = np.zeros((train.num_episodes, train.lengths.max(), train.state_dim))
    for i, (s, t) in enumerate(zip(train.starts, train.lengths)):
        padded[i, :t] = train.arrays["states"][s:s + t]
    assert not np.allclose(stats["states"].mean, padded.reshape(-1, train.state_dim).mean(axis=0))
    with pytest.raises(DataError):
        data.select([]).stats()


def test_modality_stats_are_stable_and_round_trip_through_json():
    rng = np.random.default_rng(0)
    x = (1e4 + rng.normal(scale=0.01, size=(200_000, 2))).astype(np.float32)
    s = ModalityStats.of(x)
    exact = x.astype(np.float64)
    np.testing.assert_allclose(s.std, exact.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(s.mean, exact.mean(axis=0), rtol=1e-7)
    back = ModalityStats.from_dict(json.loads(json.dumps(s.to_dict())))
    for name in ("mean", "std", "min", "max"):
        np.testing.assert_array_equal(getattr(back, name), getattr(s, name))
        assert getattr(back, name).dtype == np.float32
    assert back.count == 200_000 and back.dim == 2
    assert ModalityStats.of(np.array([1.0, 3.0])).mean.tolist() == [2.0]  # (N,) is one column
    with pytest.raises(DataError, match="std"):
        ModalityStats.from_dict({"mean": [0.0], "min": [0.0], "max": [0.0], "count": 1})
    with pytest.raises(DataError, match="zero steps"):
        ModalityStats.of(np.zeros((0, 3)))
