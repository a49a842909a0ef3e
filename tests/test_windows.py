import numpy as np
import pytest
import torch

from mtm.data.episode import DatasetInfo
from mtm.data.trajectories import Trajectories
from mtm.data.windows import WindowSampler
from mtm.errors import ConfigError, DataError

torch.set_num_threads(1)


def coded(lengths) -> Trajectories:
    """Every row's values encode where it came from: states = [episode, t], actions = 10·episode + t."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    t = np.arange(lengths.sum()) - np.repeat(starts, lengths)
    arrays = {
        "states": np.stack([episode, t], axis=1).astype(np.float32),
        "actions": (10 * episode + t)[:, None].astype(np.float32),
        "rewards": np.ones((len(t), 1), np.float32),
        "returns": (lengths[episode] - t)[:, None].astype(np.float32),
        "timesteps": t.astype(np.int64),
    }
    return Trajectories(arrays, starts, lengths, DatasetInfo("test", "memory"), ["state"],
                        {"kind": "sum", "gamma": 0.99, "horizon": 1000})


LENGTHS = [6, 2, 4, 1, 9, 3]  # shorter than, equal to and longer than the windows used below


def check_windows(batch, lengths, window):
    """Every window is consecutive real steps of one episode, then (maybe) padding of its last row."""
    states = batch["states"].numpy()
    valid = batch["valid"].numpy()
    b = states.shape[0]
    assert states.shape == (b, window, 2)
    assert batch["actions"].shape == (b, window, 1) and batch["returns"].shape == (b, window, 1)
    assert batch["timesteps"].shape == (b, window) and batch["timesteps"].dtype == torch.int64
    assert batch["valid"].dtype == torch.bool and batch["states"].dtype == torch.float32
    for i in range(b):
        episode = states[i, 0, 0]
        t0 = states[i, 0, 1]
        length = lengths[int(episode)]
        real = min(window, length)
        assert np.all(states[i, :, 0] == episode), "window crosses episodes"
        # Short episodes only ever start at 0; long ones leave room for a full window.
        assert (t0 == 0) if length < window else (t0 + window <= length)
        np.testing.assert_array_equal(valid[i], np.arange(window) < real)
        expected_t = np.minimum(t0 + np.arange(window), length - 1)  # padding repeats the last row
        np.testing.assert_array_equal(states[i, :, 1], expected_t)
        np.testing.assert_array_equal(batch["timesteps"][i].numpy(), expected_t)
        np.testing.assert_array_equal(batch["actions"][i, :, 0].numpy(), 10 * episode + expected_t)
        np.testing.assert_array_equal(batch["returns"][i, :, 0].numpy(), length - expected_t)


@pytest.mark.parametrize("window", [1, 3, 4, 12])
def test_window_count_and_every_window_in_order(window):
    data = coded(LENGTHS)
    sampler = WindowSampler(data, window)
    assert sampler.num_windows == len(sampler) == sum(max(t - window + 1, 1) for t in LENGTHS)
    batches = list(sampler.iterate(batch_size=5))
    assert [len(b["valid"]) for b in batches[:-1]] == [5] * (len(batches) - 1)
    everything = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    check_windows(everything, LENGTHS, window)
    # Exactly once each, in order: (episode, start) pairs are the full list, sorted.
    firsts = everything["states"][:, 0].numpy().astype(int)
    expected = [(e, s) for e, t in enumerate(LENGTHS) for s in range(max(t - window + 1, 1))]
    assert [tuple(p) for p in firsts] == expected


def test_samples_never_cross_episodes_and_pad_exactly():
    data = coded(LENGTHS)
    sampler = WindowSampler(data, 4)
    batch = sampler.sample(512, generator=torch.Generator().manual_seed(0))
    check_windows(batch, LENGTHS, 4)
    # Both kinds of window show up: full ones and padded ones from episodes of 2, 1 and 3 steps.
    valid = batch["valid"].numpy()
    assert valid.all(axis=1).any() and (~valid).any()
    # The episode of 1 step: one real step then three copies of it.
    one_step = batch["states"][:, 0, 0] == 3
    assert one_step.any()
    np.testing.assert_array_equal(batch["valid"][one_step][0].numpy(), [True, False, False, False])


def test_sampling_is_uniform_over_windows_and_reproducible():
    data = coded(LENGTHS)
    sampler = WindowSampler(data, 3)
    a = sampler.sample(20_000, generator=torch.Generator().manual_seed(7))
    b = sampler.sample(20_000, generator=torch.Generator().manual_seed(7))
    for key in a:
        assert torch.equal(a[key], b[key])
    # Window id = position of (episode, start) in the ordered list; each should get ≈ 1/W of draws.
    ids = {(e, s): i for i, (e, s) in enumerate(
        (e, s) for e, t in enumerate(LENGTHS) for s in range(max(t - 3 + 1, 1)))}
    firsts = a["states"][:, 0].numpy().astype(int)
    counts = np.bincount([ids[tuple(p)] for p in firsts], minlength=sampler.num_windows)
    expected = 20_000 / sampler.num_windows
    assert counts.min() > 0.8 * expected and counts.max() < 1.2 * expected


def test_windows_by_id_and_chosen_keys():
    data = coded(LENGTHS)
    sampler = WindowSampler(data, 2, keys=("states", "rewards"))
    batch = sampler.windows(torch.tensor([0, 5, 5]))
    assert set(batch) == {"states", "rewards", "timesteps", "valid"}
    # Windows of L=2: episode 0 has 5 (ids 0-4), episode 1 one (id 5).
    np.testing.assert_array_equal(batch["states"][0].numpy(), [[0, 0], [0, 1]])
    np.testing.assert_array_equal(batch["states"][1].numpy(), [[1, 0], [1, 1]])
    assert torch.equal(batch["states"][1], batch["states"][2])


def test_trailing_partial_episode_gets_windows():
    # A D4RL-like layout whose last episode was cut after 2 steps: it still yields a padded window.
    data = coded([5, 5, 2])
    sampler = WindowSampler(data, 4)
    last = list(sampler.iterate(100))[-1]
    assert last["states"][-1, 0, 0].item() == 2
    np.testing.assert_array_equal(last["valid"][-1].numpy(), [True, True, False, False])


def test_split_data_windows_stay_inside_their_episodes():
    data = coded(LENGTHS)
    train, val = data.split(0.34, seed=0)
    for part in (train, val):
        batch = next(WindowSampler(part, 3).iterate(1000))
        # 'states' encode the original episode; with the part's own lengths the checks must hold.
        lengths = dict(zip(part.episode_ids.tolist(), part.lengths.tolist()))
        check_windows(batch, lengths, 3)


def test_bad_arguments():
    data = coded(LENGTHS)
    with pytest.raises(ConfigError, match="window"):
        WindowSampler(data, 0)
    with pytest.raises(ConfigError, match="images"):
        WindowSampler(data, 2, keys=("states", "images"))
    with pytest.raises(ConfigError, match="at least one key"):
        WindowSampler(data, 2, keys=())
    with pytest.raises(DataError, match="no windows"):
        WindowSampler(data.select([]), 2)
    sampler = WindowSampler(data, 2)
    with pytest.raises(ConfigError, match="batch size"):
        sampler.sample(0)
    with pytest.raises(ConfigError, match="batch size"):
        next(sampler.iterate(0))
