"""MinariSource against datasets written by the real minari package, plus hand-built broken ones.

minari's DataCollector needs jax (``minari[create]``) only to append steps to its buffers; the
datasets here are written with ``minari.create_dataset_from_buffers``, which goes through the
same storage code (HDF5 layout, JPEG encoding, metadata.json) without it.
"""

import json
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np
import pytest
from gymnasium import spaces

from mtm.data.episode import STATE_KEY
from mtm.data.formats.minari import MinariSource, is_minari
from mtm.data.formats.native import EpisodeWriter, NativeSource
from mtm.errors import DataError

minari = pytest.importorskip("minari")
from minari.data_collector import EpisodeBuffer  # noqa: E402

# minari nags about unset author / eval_env metadata; irrelevant to these fixtures.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:minari.utils")


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def rollout(env, seed, action, max_steps=None):
    """Run one episode with a constant action; return what the env produced, step by step."""
    obs, _ = env.reset(seed=seed)
    rec = {"obs": [obs], "actions": [], "rewards": [], "terminations": [], "truncations": []}
    while True:
        a = np.array([action], dtype=np.float32)
        obs, r, term, trunc, _ = env.step(a)
        for k, v in (("obs", obs), ("actions", a), ("rewards", r), ("terminations", term),
                     ("truncations", trunc)):
            rec[k].append(v)
        if term or trunc or len(rec["actions"]) == max_steps:
            return rec


def to_buffer(rec, seed):
    return EpisodeBuffer(seed=seed, observations=rec["obs"], actions=rec["actions"],
                         rewards=rec["rewards"], terminations=rec["terminations"],
                         truncations=rec["truncations"])


@pytest.fixture
def pendulum(minari_root):
    """InvertedPendulum-v5 under a 12-step TimeLimit: one terminated, one truncated, one cut episode."""
    env = gym.make("InvertedPendulum-v5", max_episode_steps=12)
    recs = [rollout(env, 1, 3.0), rollout(env, 2, 0.0), rollout(env, 3, 0.0, max_steps=4)]
    assert recs[0]["terminations"][-1] and recs[1]["truncations"][-1]  # the scenario holds
    minari.create_dataset_from_buffers(
        "mtm/pendulum-v0", [to_buffer(r, s) for r, s in zip(recs, (1, 2, 3))], env=env,
        ref_min_score=-1.5, ref_max_score=9.5, algorithm_name="constant", author="mtm",
        author_email="mtm@example.org", code_permalink="https://example.org", description="test")
    env.close()
    return minari_root / "mtm" / "pendulum-v0", recs


def test_reads_minari_dataset_with_exact_values_and_episode_ends(pendulum):
    path, recs = pendulum
    with MinariSource(path) as src:
        assert len(src) == 3
        info = src.info
        assert info.source_format == "minari" and info.source == "mtm/pendulum-v0"
        assert info.env_id == "InvertedPendulum-v5"
        assert (info.ref_min_score, info.ref_max_score) == (-1.5, 9.5)
        assert info.observation_space["type"] == "Box" and info.observation_space["shape"] == [4]
        assert info.observation_space["low"] == ["-inf"] * 4
        assert info.action_space["low"] == [-3.0] and info.action_space["high"] == [3.0]
        assert info.extra["dataset_id"] == "mtm/pendulum-v0"
        assert info.extra["minari_version"] == minari.__version__
        assert info.extra["env_spec"]["max_episode_steps"] == 12
        assert info.extra["total_steps"] == sum(len(r["actions"]) for r in recs)
        json.dumps(info.extra)  # stays JSON-able for the native writer

        for i, (ep, rec) in enumerate(zip(src, recs)):
            t = len(rec["actions"])
            assert ep.length == t and ep.has_final_observation
            assert list(ep.observations) == [STATE_KEY]
            np.testing.assert_array_equal(ep.observations[STATE_KEY],
                                          np.array(rec["obs"], dtype=np.float32))
            np.testing.assert_array_equal(ep.actions, np.array(rec["actions"], dtype=np.float32))
            np.testing.assert_array_equal(ep.rewards, np.array(rec["rewards"], dtype=np.float32))
            np.testing.assert_array_equal(ep.terminations, rec["terminations"])
            np.testing.assert_array_equal(ep.truncations, rec["truncations"])
            assert ep.seed == i + 1 and ep.source_id == f"episode_{i}"
        first, second, third = src.episode(0), src.episode(1), src.episode(2)
        assert first.terminated and not first.truncated and first.length == 3
        assert second.truncated and not second.terminated and second.length == 12
        assert not third.terminated and not third.truncated and third.length == 4


@pytest.mark.parametrize("spelling", ["dataset", "data", "file"])
def test_accepts_dataset_folder_data_folder_or_hdf5_file(pendulum, spelling):
    path, recs = pendulum
    target = {"dataset": path, "data": path / "data", "file": path / "data" / "main_data.hdf5"}[spelling]
    assert is_minari(target)
    with MinariSource(target) as src:
        assert len(src) == 3 and src.episode_length(1) == len(recs[1]["actions"])
        assert src.observation_keys() == [STATE_KEY]


# --- dict observations and images ---------------------------------------------------------------

IMAGE_OBS_SPACE = spaces.Dict({
    "pixels": spaces.Box(0, 255, (32, 40, 3), np.uint8),  # an image by Minari's rule: JPEG
    "gray": spaces.Box(0, 255, (32, 32), np.uint8),  # grey image: JPEG, read back as HWC
    "tiles": spaces.Box(0, 255, (4, 4), np.uint8),  # too small to be an image: stored raw
    "proprio": spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float32),
                            "vel": spaces.Box(-np.inf, np.inf, (1,), np.float64)}),
})


def image_episode(t, shift, seed):
    """Smooth frames (JPEG keeps them close) that differ per step, and a constant grey image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:40]
    obs = {"pixels": [], "gray": [], "tiles": [], "proprio": {"pos": [], "vel": []}}
    for k in range(t + 1):
        base = yy * 2 + xx * 2 + 9 * (k + shift)  # no wrap-around edges: JPEG stays close
        obs["pixels"].append(np.stack([base, 200 - base, np.full_like(base, 30 * k)], -1).astype(np.uint8))
        # identical frames encode to identical byte strings: Minari then stores a fixed-length array
        obs["gray"].append(np.full((32, 32), 40 + 10 * shift, np.uint8))
        obs["tiles"].append(rng.integers(0, 256, (4, 4), dtype=np.uint8))
        obs["proprio"]["pos"].append(rng.uniform(-1, 1, 2).astype(np.float32))
        obs["proprio"]["vel"].append(rng.normal(size=1))
    terms = [False] * (t - 1) + [shift == 0]
    truncs = [False] * (t - 1) + [shift != 0]
    return obs, EpisodeBuffer(seed=seed, observations=obs, actions=[int(a) for a in rng.integers(0, 3, t)],
                              rewards=list(rng.normal(size=t)), terminations=terms, truncations=truncs)


def make_image_dataset(name, jpeg):
    made = [image_episode(5, 0, 10), image_episode(3, 1, 11)]
    minari.create_dataset_from_buffers(
        name, [b for _, b in made], observation_space=IMAGE_OBS_SPACE, action_space=spaces.Discrete(3),
        algorithm_name="x", author="x", author_email="x", code_permalink="x", description="x",
        jpeg_encoding=jpeg)
    return [obs for obs, _ in made], [b for _, b in made]


def test_jpeg_images_decode_like_minari_and_dict_keys_flatten(minari_root):
    recorded, buffers = make_image_dataset("mtm/images-v0", jpeg=True)
    path = minari_root / "mtm" / "images-v0"
    with h5py.File(path / "data" / "main_data.hdf5") as f:  # both of Minari's JPEG layouts occur
        assert h5py.check_vlen_dtype(f["episode_0/observations/pixels"].dtype) is not None
        assert f["episode_0/observations/gray"].ndim == 2
    theirs = minari.MinariDataset(path / "data")
    with MinariSource(path) as src:
        info = src.info
        assert info.env_id is None and info.ref_min_score is None and info.ref_max_score is None
        assert info.extra["jpeg_encoding"] is True
        obs_space = info.observation_space
        assert sorted(obs_space["spaces"]) == ["gray", "pixels", "proprio/pos", "proprio/vel", "tiles"]
        assert obs_space["spaces"]["gray"]["shape"] == [32, 32, 1]
        assert obs_space["spaces"]["proprio/vel"]["high"] == ["inf"]
        assert info.action_space == {"type": "Discrete", "n": 3, "start": 0}
        assert sorted(src.observation_keys()) == sorted(obs_space["spaces"])
        for i, (rec, buf) in enumerate(zip(recorded, buffers)):
            ep, ref = src.episode(i), theirs[i]
            t = len(buf.actions)
            assert ep.length == t and ep.has_final_observation
            pixels = ep.observations["pixels"]
            assert pixels.dtype == np.uint8 and pixels.shape == (t + 1, 32, 40, 3)
            np.testing.assert_array_equal(pixels, ref.observations["pixels"])  # same JPEG decode
            err = np.abs(pixels.astype(int) - np.array(rec["pixels"], dtype=int)).mean()
            assert err < 3.0  # and close to what the env produced (JPEG is lossy)
            assert ep.observations["gray"].shape == (t + 1, 32, 32, 1)
            np.testing.assert_array_equal(ep.observations["gray"][..., 0], ref.observations["gray"])
            np.testing.assert_array_equal(ep.observations["tiles"], np.array(rec["tiles"]))
            np.testing.assert_array_equal(ep.observations["proprio/pos"], np.array(rec["proprio"]["pos"]))
            np.testing.assert_array_equal(ep.observations["proprio/vel"],
                                          np.array(rec["proprio"]["vel"], dtype=np.float32))
            assert ep.actions.dtype == np.int64
            np.testing.assert_array_equal(ep.actions, buf.actions)
            assert ep.terminated == (i == 0) and ep.truncated == (i == 1)


def test_converts_to_native_and_back_with_nested_keys(minari_root, tmp_path):
    make_image_dataset("mtm/convert-v0", jpeg=True)
    out = tmp_path / "converted.hdf5"
    with MinariSource(minari_root / "mtm" / "convert-v0") as src:
        with EpisodeWriter(out, src.info) as writer:
            for ep in src:
                writer.add(ep)
        with NativeSource(out) as native:
            assert native.info.observation_space == src.info.observation_space
            assert sorted(native.observation_keys()) == sorted(src.observation_keys())
            for a, b in zip(src, native):
                assert a.observations.keys() == b.observations.keys()
                for key in a.observations:
                    np.testing.assert_array_equal(a.observations[key], b.observations[key])
                np.testing.assert_array_equal(a.actions, b.actions)


def test_raw_images_when_jpeg_encoding_is_off(minari_root):
    recorded, _ = make_image_dataset("mtm/raw-v0", jpeg=False)
    with MinariSource(minari_root / "mtm" / "raw-v0") as src:
        assert src.info.extra["jpeg_encoding"] is False
        for i, rec in enumerate(recorded):
            ep = src.episode(i)
            np.testing.assert_array_equal(ep.observations["pixels"], np.array(rec["pixels"]))
            np.testing.assert_array_equal(ep.observations["gray"], np.array(rec["gray"])[..., None])


# --- hand-built files: ordering, layouts and errors -------------------------------------------

BOX3 = json.dumps({"type": "Box", "dtype": "float32", "shape": [3], "low": [-1.0] * 3, "high": [1.0] * 3})
BOX2 = json.dumps({"type": "Box", "dtype": "float32", "shape": [2], "low": [-1.0] * 2, "high": [1.0] * 2})


def write_minari(root: Path, lengths, *, metadata_in_data=True, drop=None, obs_rows=None,
                 nan_step=None, **meta_overrides) -> Path:
    """A Minari layout written by hand; episode i's observations are filled with the value i."""
    data = root / "data"
    data.mkdir(parents=True)
    meta = {"total_episodes": len(lengths), "total_steps": sum(lengths), "data_format": "hdf5",
            "jpeg_encoding": True, "observation_space": BOX3, "action_space": BOX2,
            "dataset_id": "hand/built-v0", "minari_version": "0.5.4"}
    meta.update(meta_overrides)
    (data if metadata_in_data else root).joinpath("metadata.json").write_text(json.dumps(meta))
    with h5py.File(data / "main_data.hdf5", "w") as f:  # h5py lists groups lexically: 0, 1, 10, 11, 2
        for i, t in enumerate(lengths):
            g = f.create_group(f"episode_{i}")
            g.attrs["id"] = i
            rows = obs_rows if obs_rows is not None else t + 1
            g["observations"] = np.full((rows, 3), i, np.float32)
            actions = np.zeros((t, 2), np.float32)
            if nan_step is not None:
                actions[nan_step, 1] = np.nan
            g["actions"] = actions
            g["rewards"] = np.ones(t)
            g["terminations"] = np.eye(1, t, t - 1, dtype=bool)[0]
            g["truncations"] = np.zeros(t, bool)
            if drop:
                del g[drop]
    return root


def test_episodes_are_ordered_numerically(tmp_path):
    lengths = [i + 1 for i in range(12)]
    root = write_minari(tmp_path / "ds", lengths)
    with MinariSource(root) as src:
        assert [src.episode(i).length for i in range(12)] == lengths
        assert [src.episode(i).observations[STATE_KEY][0, 0] for i in range(12)] == list(range(12))
        assert src.episode(10).source_id == "episode_10"


def test_metadata_next_to_the_data_folder_is_accepted(tmp_path):
    root = write_minari(tmp_path / "ds", [2, 3], metadata_in_data=False)
    assert is_minari(root) and is_minari(root / "data" / "main_data.hdf5")
    with MinariSource(root / "data" / "main_data.hdf5") as src:
        assert len(src) == 2 and src.info.source == "hand/built-v0" and src.info.env_id is None


def test_is_minari_rejects_other_things(tmp_path):
    assert not is_minari(tmp_path / "nope")
    assert not is_minari(tmp_path)  # an empty folder
    other = tmp_path / "other.hdf5"
    with h5py.File(other, "w") as f:
        f.create_group("data/demo_0")
    assert not is_minari(other)


@pytest.mark.parametrize("missing", ["truncations", "observations", "terminations"])
def test_episode_missing_a_key(tmp_path, missing):
    root = write_minari(tmp_path / "ds", [3], drop=missing)
    with MinariSource(root) as src, pytest.raises(DataError, match=f"episode_0: missing '{missing}'"):
        src.episode(0)


def test_observation_rows_must_be_t_plus_one(tmp_path):
    root = write_minari(tmp_path / "ds", [3], obs_rows=3)
    with MinariSource(root) as src, pytest.raises(DataError, match="has 3 rows for 3 actions.*T\\+1 = 4"):
        src.episode(0)


def test_nan_is_reported_with_its_step(tmp_path):
    root = write_minari(tmp_path / "ds", [4], nan_step=2)
    with MinariSource(root) as src, pytest.raises(DataError, match="actions holds NaN or inf \\(first at step 2\\)"):
        src.episode(0)


def test_missing_metadata_json(tmp_path):
    root = write_minari(tmp_path / "ds", [3])
    (root / "data" / "metadata.json").unlink()
    assert is_minari(root)  # still recognised, so that the error below is what the user sees
    with pytest.raises(DataError, match="no metadata.json next to main_data.hdf5"):
        MinariSource(root)


def test_missing_main_data(tmp_path):
    root = write_minari(tmp_path / "ds", [3])
    (root / "data" / "main_data.hdf5").unlink()
    assert is_minari(root)
    with pytest.raises(DataError, match="main_data.hdf5: missing"):
        MinariSource(root)


def test_episode_count_must_match_metadata(tmp_path):
    root = write_minari(tmp_path / "ds", [3, 2], total_episodes=5)
    with pytest.raises(DataError, match="total_episodes is 5 but main_data.hdf5 holds 2"):
        MinariSource(root)


def test_non_hdf5_storage_is_refused(tmp_path):
    root = write_minari(tmp_path / "ds", [3], data_format="arrow")
    with pytest.raises(DataError, match="'arrow' storage; mtm reads only 'hdf5'"):
        MinariSource(root)


def test_corrupt_jpeg_frame(tmp_path):
    space = {"type": "Box", "dtype": "uint8", "shape": [32, 32, 3], "low": 0, "high": 255}
    root = write_minari(tmp_path / "ds", [2], observation_space=json.dumps(space))
    with h5py.File(root / "data" / "main_data.hdf5", "a") as f:
        del f["episode_0/observations"]
        frames = f["episode_0"].create_dataset("observations", (3,), dtype=h5py.vlen_dtype(np.uint8))
        for i in range(3):
            frames[i] = np.frombuffer(b"not a jpeg", np.uint8)
    with MinariSource(root) as src, pytest.raises(DataError, match="frame 0 is not a decodable JPEG"):
        src.episode(0)
