"""RobomimicSource against hand-built files in robomimic's layout."""

import json

import h5py
import numpy as np
import pytest

from mtm.data.formats.robomimic import RobomimicSource, is_robomimic
from mtm.errors import DataError

ENV_ARGS = {"env_name": "Lift", "type": 1, "env_kwargs": {"control_freq": 20, "has_renderer": False}}


def make_demo(t, seed, *, dones=None, image=True):
    """One demo as robomimic writes it; next_obs[k] is obs[k] shifted by one plus a fresh last row."""
    rng = np.random.default_rng(seed)
    seq = {"robot0_eef_pos": rng.normal(size=(t + 1, 3)),  # float64 in the file, float32 when read
           "object": rng.normal(size=(t + 1, 10)).astype(np.float32)}
    if image:
        seq["agentview_image"] = rng.integers(0, 256, size=(t + 1, 8, 8, 3), dtype=np.uint8)
    if dones is None:
        dones = [0] * (t - 1) + [1]
    return {
        "seq": seq,
        "actions": rng.uniform(-1, 1, size=(t, 7)),
        "rewards": rng.uniform(size=t),
        "dones": np.array(dones, dtype=np.int64),
        "states": rng.normal(size=(t, 32)),
    }


def write_robomimic(path, demos, *, masks=None, next_obs=True, env_args=ENV_ARGS, edit=None):
    """Write demos (a dict name -> make_demo output) in robomimic's layout; `edit(f)` breaks it."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        total = 0
        for name, d in demos.items():
            g = data.create_group(name)
            t = len(d["actions"])
            for key, arr in d["seq"].items():
                g[f"obs/{key}"] = arr[:t]
                if next_obs:
                    g[f"next_obs/{key}"] = arr[1:]
            for key in ("actions", "rewards", "dones", "states"):
                g[key] = d[key]
            g.attrs["num_samples"] = t
            g.attrs["model_file"] = "<mujoco/>"
            total += t
        data.attrs["total"] = total
        if env_args is not None:
            data.attrs["env_args"] = json.dumps(env_args, indent=4)
        for name, listed in (masks or {}).items():
            f[f"mask/{name}"] = np.array([s.encode() for s in listed], dtype="S")
        if edit is not None:
            edit(f)
    return path


@pytest.fixture
def demos():
    # names chosen so that lexical order (0, 1, 10, 2) differs from numeric order (0, 1, 2, 10)
    return {"demo_0": make_demo(4, 0), "demo_1": make_demo(2, 1), "demo_10": make_demo(5, 10),
            "demo_2": make_demo(3, 2, dones=[0, 0, 0])}


def test_reads_demos_in_numeric_order_with_final_observation(tmp_path, demos):
    path = write_robomimic(tmp_path / "image.hdf5", demos)
    assert is_robomimic(path)
    with RobomimicSource(path) as src:
        assert len(src) == 4
        assert [src.episode(i).source_id for i in range(4)] == ["demo_0", "demo_1", "demo_2", "demo_10"]
        for i, name in enumerate(["demo_0", "demo_1", "demo_2", "demo_10"]):
            d = demos[name]
            ep = src.episode(i)
            t = len(d["actions"])
            assert ep.length == t and src.episode_length(i) == t and ep.has_final_observation
            for key, full in d["seq"].items():
                got = ep.observations[key]
                assert got.shape == full.shape
                if key == "agentview_image":
                    assert got.dtype == np.uint8
                    np.testing.assert_array_equal(got, full)
                else:
                    assert got.dtype == np.float32
                    np.testing.assert_array_equal(got, full.astype(np.float32))
            assert ep.actions.dtype == np.float32 and ep.rewards.dtype == np.float32
            np.testing.assert_array_equal(ep.actions, d["actions"].astype(np.float32))
            np.testing.assert_array_equal(ep.rewards, d["rewards"].astype(np.float32))


def test_info_carries_env_args_and_derived_spaces(tmp_path, demos):
    path = write_robomimic(tmp_path / "image.hdf5", demos, masks={"train": ["demo_0"]})
    with RobomimicSource(path) as src:
        info = src.info
        assert info.source_format == "robomimic" and info.source == str(path)
        assert info.env_id == "Lift" and info.ref_min_score is None and info.ref_max_score is None
        assert info.extra["env_args"] == ENV_ARGS
        assert info.extra["total"] == 14 and info.extra["num_demos"] == 4
        assert info.extra["filters"] == ["train"] and info.extra["filter_key"] is None
        assert info.extra["unread_keys"] == ["states"]
        spaces = info.observation_space["spaces"]
        assert spaces["agentview_image"]["dtype"] == "uint8" and spaces["agentview_image"]["shape"] == [8, 8, 3]
        assert spaces["robot0_eef_pos"]["dtype"] == "float32" and spaces["robot0_eef_pos"]["shape"] == [3]
        assert info.action_space["shape"] == [7] and info.action_space["low"][0] == "-inf"
        assert sorted(src.observation_keys()) == sorted(spaces)
        json.dumps(info.extra)


def test_dones_map_to_termination_or_truncation_at_the_last_step(tmp_path):
    demos = {
        "demo_0": make_demo(5, 0, dones=[0, 0, 1, 1, 1]),  # success held for the last 3 steps
        "demo_1": make_demo(3, 1, dones=[0, 0, 0]),  # the demo just stops
        "demo_2": make_demo(3, 2, dones=[0, 0, 1]),
    }
    with RobomimicSource(write_robomimic(tmp_path / "d.hdf5", demos, next_obs=False)) as src:
        success, stopped, done = src.episode(0), src.episode(1), src.episode(2)
        np.testing.assert_array_equal(success.terminations, [0, 0, 0, 0, 1])
        np.testing.assert_array_equal(success.truncations, [0, 0, 0, 0, 0])
        np.testing.assert_array_equal(stopped.terminations, [0, 0, 0])
        np.testing.assert_array_equal(stopped.truncations, [0, 0, 1])
        assert done.terminated and not done.truncated


def test_without_next_obs_episodes_have_t_rows(tmp_path):
    demos = {"demo_0": make_demo(4, 0, image=False)}
    with RobomimicSource(write_robomimic(tmp_path / "low_dim.hdf5", demos, next_obs=False)) as src:
        ep = src.episode(0)
        assert not ep.has_final_observation and ep.observations["object"].shape == (4, 10)
        np.testing.assert_array_equal(ep.observations["object"], demos["demo_0"]["seq"]["object"][:4])


def test_filter_key_selects_demos(tmp_path, demos):
    masks = {"train": ["demo_10", "demo_0", "demo_2"], "valid": ["demo_1"]}
    path = write_robomimic(tmp_path / "d.hdf5", demos, masks=masks)
    with RobomimicSource(path, filter_key="train") as src:
        assert len(src) == 3 and src.info.extra["filter_key"] == "train"
        assert [ep.source_id for ep in src] == ["demo_0", "demo_2", "demo_10"]
    with RobomimicSource(path, filter_key="valid") as src:
        assert [ep.source_id for ep in src] == ["demo_1"]


def test_unknown_filter_lists_the_available_ones(tmp_path, demos):
    path = write_robomimic(tmp_path / "d.hdf5", demos, masks={"train": ["demo_0"], "valid": ["demo_1"]})
    with pytest.raises(DataError, match="no filter 'test'; available filters: train, valid"):
        RobomimicSource(path, filter_key="test")
    bare = write_robomimic(tmp_path / "bare.hdf5", demos)
    with pytest.raises(DataError, match="no mask/ group"):
        RobomimicSource(bare, filter_key="train")


def test_filter_naming_missing_demos(tmp_path, demos):
    path = write_robomimic(tmp_path / "d.hdf5", demos, masks={"train": ["demo_0", "demo_99"]})
    with pytest.raises(DataError, match="mask/train lists demos that are not in data/: demo_99"):
        RobomimicSource(path, filter_key="train")


def test_missing_env_args_leaves_env_id_unset(tmp_path, demos):
    with RobomimicSource(write_robomimic(tmp_path / "d.hdf5", demos, env_args=None)) as src:
        assert src.info.env_id is None and src.info.extra["env_args"] is None


def test_missing_dataset(tmp_path):
    path = write_robomimic(tmp_path / "d.hdf5", {"demo_0": make_demo(3, 0)},
                           edit=lambda f: f["data/demo_0"].__delitem__("dones"))
    with RobomimicSource(path) as src, pytest.raises(DataError, match="demo_0: missing dataset 'dones'"):
        src.episode(0)


@pytest.mark.parametrize("missing", ["actions", "rewards"])
def test_a_demo_without_actions_or_rewards_reads_as_lacking_them(tmp_path, missing):
    def drop(f):
        del f[f"data/demo_1/{missing}"]

    path = write_robomimic(tmp_path / "d.hdf5", {"demo_0": make_demo(3, 0), "demo_1": make_demo(4, 1)}, edit=drop)
    with RobomimicSource(path) as src:
        full, partial = src.episode(0), src.episode(1)
        assert getattr(full, missing) is not None and getattr(partial, missing) is None
        assert partial.length == 4 and src.episode_length(1) == 4
        other = "rewards" if missing == "actions" else "actions"
        assert getattr(partial, other) is not None


def test_states_only_file_says_how_to_extract_observations(tmp_path):
    def drop_obs(f):
        del f["data/demo_0/obs"], f["data/demo_0/next_obs"]
    path = write_robomimic(tmp_path / "d.hdf5", {"demo_0": make_demo(3, 0)}, edit=drop_obs)
    with RobomimicSource(path) as src, pytest.raises(DataError, match="dataset_states_to_obs.py"):
        src.episode(0)


def test_inconsistent_lengths(tmp_path):
    def short_obs(f):
        del f["data/demo_0/obs/object"]
        f["data/demo_0/obs/object"] = np.zeros((2, 10), np.float32)
    path = write_robomimic(tmp_path / "a.hdf5", {"demo_0": make_demo(3, 0)}, edit=short_obs)
    with RobomimicSource(path) as src, pytest.raises(DataError, match="obs/object has shape \\(2, 10\\) but there are 3 actions"):
        src.episode(0)

    def wrong_count(f):
        f["data/demo_0"].attrs["num_samples"] = 7
    path = write_robomimic(tmp_path / "b.hdf5", {"demo_0": make_demo(3, 0)}, edit=wrong_count)
    with RobomimicSource(path) as src, pytest.raises(DataError, match="num_samples is 7 but actions has 3 rows"):
        src.episode(0)

    def short_rewards(f):
        del f["data/demo_0/rewards"]
        f["data/demo_0/rewards"] = np.zeros(2)
    path = write_robomimic(tmp_path / "c.hdf5", {"demo_0": make_demo(3, 0)}, edit=short_rewards)
    with RobomimicSource(path) as src, pytest.raises(DataError, match="rewards has shape \\(2,\\) but there are 3 actions"):
        src.episode(0)

    def partial_next_obs(f):
        del f["data/demo_0/next_obs/object"]
    path = write_robomimic(tmp_path / "d.hdf5", {"demo_0": make_demo(3, 0)}, edit=partial_next_obs)
    with RobomimicSource(path) as src, pytest.raises(DataError, match="next_obs lacks object"):
        src.episode(0)


def test_nan_in_observations(tmp_path):
    def poison(f):
        f["data/demo_0/obs/robot0_eef_pos"][1, 0] = np.nan
    path = write_robomimic(tmp_path / "d.hdf5", {"demo_0": make_demo(3, 0)}, edit=poison)
    with RobomimicSource(path) as src, pytest.raises(DataError, match="robot0_eef_pos holds NaN or inf \\(first at step 1\\)"):
        src.episode(0)


def test_is_robomimic_rejects_other_layouts(tmp_path):
    other = tmp_path / "flat.hdf5"
    with h5py.File(other, "w") as f:
        f["observations"] = np.zeros((3, 2))
    assert not is_robomimic(other)
    assert not is_robomimic(tmp_path)  # a folder
    assert not is_robomimic(tmp_path / "missing.hdf5")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    assert not is_robomimic(text)
    with pytest.raises(DataError, match="no 'data' group"):
        RobomimicSource(other)
