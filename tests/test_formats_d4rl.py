from pathlib import Path

import h5py
import numpy as np
import pytest

from mtm.data.episode import STATE_KEY
from mtm.data.formats.d4rl import D4RLSource, episode_bounds
from mtm.errors import DataError, MTMWarning

# Three episodes in nine rows: a termination after row 2, a timeout after row 6, and a trailing
# partial episode (rows 7-8) that the file cut short.
TERMINALS = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0], bool)
TIMEOUTS = np.array([0, 0, 0, 0, 0, 0, 1, 0, 0], bool)
N = TERMINALS.size


def d4rl_arrays(dtype=np.float32, obs_dim: int = 2, act_dim: int = 3) -> dict[str, np.ndarray]:
    rows = np.arange(N, dtype=dtype)[:, None]
    return {
        # Row i of observations holds i; next_observations holds i + 100, so any row that leaks
        # from the wrong array or across an episode boundary shows up in the values.
        "observations": np.repeat(rows, obs_dim, axis=1),
        "next_observations": np.repeat(rows + 100, obs_dim, axis=1),
        "actions": np.repeat(-rows, act_dim, axis=1),
        "rewards": np.arange(N, dtype=dtype),
        "terminals": TERMINALS,
        "timeouts": TIMEOUTS,
    }


def write_d4rl(path: Path, arrays: dict[str, np.ndarray], metadata: dict | None = None) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
        for key, value in (metadata or {}).items():
            f[f"metadata/{key}"] = value
        f["infos/qpos"] = np.zeros((N, 1), np.float32)
    return path


def test_episodes_split_on_terminals_timeouts_and_keep_the_trailing_partial(tmp_path):
    with D4RLSource(write_d4rl(tmp_path / "d.hdf5", d4rl_arrays())) as src:
        assert len(src) == 3
        eps = list(src)
    assert [e.length for e in eps] == [3, 4, 2]
    assert [e.episode_return for e in eps] == [0 + 1 + 2, 3 + 4 + 5 + 6, 7 + 8]
    assert [(e.terminated, e.truncated) for e in eps] == [(True, False), (False, True), (False, False)]
    for e, (start, stop) in zip(eps, [(0, 3), (3, 7), (7, 9)]):
        # T+1 observation rows: the episode's own rows, then the next_observation of its last step
        # (never the first row of the following episode).
        assert e.has_final_observation
        expected_rows = list(range(start, stop)) + [stop - 1 + 100]
        np.testing.assert_array_equal(e.observations[STATE_KEY][:, 0], expected_rows)
        np.testing.assert_array_equal(e.actions[:, 0], -np.arange(start, stop))
        assert not e.terminations[:-1].any() and not e.truncations[:-1].any()
        assert e.source_id == f"steps {start}:{stop}"
        e.validate()
    assert not eps[2].terminations.any() and not eps[2].truncations.any()


def test_float64_file_is_cast_to_float32(tmp_path):
    arrays = d4rl_arrays(dtype=np.float64)
    arrays["observations"][4, 1] = 0.1  # not exactly representable: the cast must round, not fail
    with D4RLSource(write_d4rl(tmp_path / "d.hdf5", arrays)) as src:
        e = src.episode(1)
        flat = src.flat_arrays()
    for arr in (e.observations[STATE_KEY], e.actions, e.rewards, flat.next_observations):
        assert arr.dtype == np.float32
    assert e.observations[STATE_KEY][1, 1] == np.float32(0.1)
    assert src.info.observation_space["dtype"] == "float32"


def test_column_rewards_are_squeezed(tmp_path):
    arrays = d4rl_arrays()
    arrays["rewards"] = arrays["rewards"][:, None]
    with D4RLSource(write_d4rl(tmp_path / "d.hdf5", arrays)) as src:
        assert src.flat_arrays().rewards.shape == (N,)
        np.testing.assert_array_equal(src.episode(1).rewards, [3, 4, 5, 6])


def test_old_file_without_timeouts_splits_on_terminals_only(tmp_path):
    arrays = d4rl_arrays()
    del arrays["timeouts"]
    with pytest.warns(MTMWarning, match="no 'timeouts', so episodes end only where 'terminals' is set"):
        src = D4RLSource(write_d4rl(tmp_path / "d.hdf5", arrays))
    with src:
        assert [e.length for e in src] == [3, 6]
        last = src.episode(1)
        assert not last.terminations.any() and not last.truncations.any()


def test_without_next_observations_episodes_have_t_rows(tmp_path):
    arrays = d4rl_arrays()
    del arrays["next_observations"]
    with D4RLSource(write_d4rl(tmp_path / "d.hdf5", arrays)) as src:
        e = src.episode(1)
        assert src.flat_arrays().next_observations is None
    assert not e.has_final_observation
    np.testing.assert_array_equal(e.observations[STATE_KEY][:, 0], [3, 4, 5, 6])
    e.validate()


def test_step_that_is_both_terminal_and_timeout_ends_one_episode(tmp_path):
    arrays = d4rl_arrays()
    arrays["timeouts"] = TERMINALS.copy()
    with D4RLSource(write_d4rl(tmp_path / "d.hdf5", arrays)) as src:
        assert [e.length for e in src] == [3, 6]
        assert src.episode(0).terminated and src.episode(0).truncated


def test_flat_arrays_describe_every_episode(tmp_path):
    with D4RLSource(write_d4rl(tmp_path / "d.hdf5", d4rl_arrays())) as src:
        flat = src.flat_arrays()
    np.testing.assert_array_equal(flat.starts, [0, 3, 7])
    np.testing.assert_array_equal(flat.lengths, [3, 4, 2])
    np.testing.assert_array_equal(flat.ends_terminal, [True, False, False])
    np.testing.assert_array_equal(flat.ends_timeout, [False, True, False])
    np.testing.assert_array_equal(flat.episode_returns(), [3, 18, 15])
    assert flat.observations.shape == (N, 2) and flat.actions.shape == (N, 3)


def test_loaded_arrays_are_read_only(tmp_path):
    # Episodes share the loaded arrays: an in-place edit must fail rather than corrupt later reads.
    with D4RLSource(write_d4rl(tmp_path / "d.hdf5", d4rl_arrays())) as src:
        with pytest.raises(ValueError, match="read-only"):
            src.episode(0).actions[0, 0] = 1.0
        with pytest.raises(ValueError, match="read-only"):
            src.flat_arrays().rewards[0] = 1.0


def test_episode_bounds_when_the_file_ends_exactly_at_an_episode_end():
    starts, lengths = episode_bounds(np.array([0, 1, 0, 1], bool))
    np.testing.assert_array_equal(starts, [0, 2])
    np.testing.assert_array_equal(lengths, [2, 2])
    starts, lengths = episode_bounds(np.zeros(3, bool))
    np.testing.assert_array_equal(starts, [0])
    np.testing.assert_array_equal(lengths, [3])


def test_info_reads_env_id_metadata_and_reference_scores(tmp_path):
    path = write_d4rl(tmp_path / "d.hdf5", d4rl_arrays(),
                      metadata={"env_id": b"Hopper-v5", "policy_steps": np.array([10, 20])})
    with D4RLSource(path) as src:
        info = src.info
    assert info.source_format == "d4rl" and info.source == str(path.resolve())
    assert info.env_id == "Hopper-v5"
    assert (info.ref_min_score, info.ref_max_score) == pytest.approx((17.8519, 3020.0875), abs=1e-3)
    assert info.extra["metadata"] == {"env_id": "Hopper-v5", "policy_steps": [10, 20]}
    assert info.extra["infos"] == ["qpos"]
    assert info.observation_space == {"type": "Box", "shape": [2], "dtype": "float32",
                                      "low": ["-inf", "-inf"], "high": ["inf", "inf"]}
    assert info.action_space["shape"] == [3]


def test_original_d4rl_file_name_gives_d4rl_reference_scores(tmp_path):
    # D4RL downloads have no metadata/env_id; their file name is the dataset id.
    with D4RLSource(write_d4rl(tmp_path / "walker2d_medium_replay-v2.hdf5", d4rl_arrays())) as src:
        assert src.info.env_id is None
        assert (src.info.ref_min_score, src.info.ref_max_score) == (1.629008, 4592.3)
        assert "D4RL" in src.info.extra["reference_scores"]
    with D4RLSource(write_d4rl(tmp_path / "mine.hdf5", d4rl_arrays(), {"env_id": "Ant-v5"})) as src:
        assert src.info.env_id == "Ant-v5"
        assert src.info.ref_min_score is None and src.info.ref_max_score is None


def _drop(key):
    def edit(a):
        del a[key]
    return edit


def _set(key, value):
    def edit(a):
        a[key] = value
    return edit


def _nan_at(key, row):
    def edit(a):
        a[key] = a[key].copy()
        a[key][row] = np.inf if key == "actions" else np.nan
    return edit


@pytest.mark.parametrize("edit,message", [
    (_drop("terminals"), r"missing D4RL dataset\(s\) terminals; a D4RL file needs observations and terminals"),
    (_set("actions", np.zeros((N - 1, 3), np.float32)), r"'actions' has 8 rows but 'observations' has 9"),
    (_set("timeouts", np.zeros(N + 2, bool)), r"'timeouts' has 11 rows but 'observations' has 9"),
    (_set("next_observations", np.zeros((N, 5), np.float32)), r"'next_observations' has shape \(9, 5\)"),
    (_set("rewards", np.zeros((N, 2), np.float32)),
     r"'rewards' has shape \(9, 2\); expected \(N,\) or \(N, 1\)"),
    (_set("observations", np.zeros(N, np.float32)), r"'observations' has shape \(9,\); expected \(N, dim\)"),
    (_nan_at("observations", 5), r"'observations' holds NaN or inf \(first at row 5\)"),
    (_nan_at("actions", 8), r"'actions' holds NaN or inf \(first at row 8\)"),
    (_nan_at("rewards", 0), r"'rewards' holds NaN or inf \(first at row 0\)"),
    (_nan_at("next_observations", 3), r"'next_observations' holds NaN or inf \(first at row 3\)"),
])
def test_malformed_files_give_one_clear_error(tmp_path, edit, message):
    arrays = d4rl_arrays()
    edit(arrays)
    path = write_d4rl(tmp_path / "bad.hdf5", arrays)
    with pytest.raises(DataError, match=message) as err:
        D4RLSource(path)
    assert str(err.value).startswith(str(path.resolve())) and "\n" not in str(err.value)


def test_empty_file_is_rejected(tmp_path):
    arrays = {k: v[:0] for k, v in d4rl_arrays().items()}
    with pytest.raises(DataError, match="holds no transitions"):
        D4RLSource(write_d4rl(tmp_path / "empty.hdf5", arrays))


def test_episode_index_out_of_range(tmp_path):
    with D4RLSource(write_d4rl(tmp_path / "d.hdf5", d4rl_arrays())) as src:
        with pytest.raises(IndexError):
            src.episode(3)


def test_reference_table_lookups():
    from envs.references import normalized_score, reference_scores

    assert reference_scores("hopper-medium-replay-v2") == (-20.272305, 3234.3)
    assert reference_scores("halfcheetah_medium_expert-v2") == (-280.178953, 12135.0)
    assert reference_scores("Hopper-v5") == pytest.approx((17.852, 3020.088), abs=1e-3)
    assert reference_scores("hopper-v5") is None  # gymnasium ids are case-sensitive
    assert reference_scores("Ant-v5") is None and reference_scores(None) is None
    assert normalized_score(3234.3, -20.272305, 3234.3) == pytest.approx(100.0)
