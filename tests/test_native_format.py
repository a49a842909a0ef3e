from pathlib import Path

import h5py
import numpy as np
import pytest

from mtm.data.episode import STATE_KEY, DatasetInfo, Episode
from mtm.data.formats.native import EpisodeWriter, NativeSource
from mtm.errors import DataError, OutputExistsError


def make_episode(t: int, obs_dim: int = 3, act_dim: int = 2, final: bool = True, terminal: bool = True,
                 image: bool = False, seed: int = 0) -> Episode:
    rng = np.random.default_rng(seed)
    rows = t + 1 if final else t
    obs = {STATE_KEY: rng.normal(size=(rows, obs_dim)).astype(np.float32)}
    if image:
        obs["pixels"] = rng.integers(0, 255, size=(rows, 8, 8, 3), dtype=np.uint8)
    term = np.zeros(t, bool)
    term[-1] = terminal
    trunc = np.zeros(t, bool)
    trunc[-1] = not terminal
    return Episode(obs, rng.normal(size=(t, act_dim)).astype(np.float32),
                   rng.normal(size=t).astype(np.float32), term, trunc, seed=seed, source_id=f"e{seed}")


INFO = DatasetInfo(source_format="native", source="test", env_id="Hopper-v5", ref_min_score=-1.0,
                   ref_max_score=2.5, extra={"note": "x"})


def test_round_trip_preserves_every_array_and_attribute(tmp_path):
    eps = [make_episode(5, seed=1), make_episode(3, final=False, terminal=False, seed=2),
           make_episode(1, seed=3)]
    out = tmp_path / "d.hdf5"
    with EpisodeWriter(out, INFO) as w:
        for e in eps:
            w.add(e)
    with NativeSource(out) as src:
        assert len(src) == 3
        assert src.info.env_id == "Hopper-v5"
        assert src.info.ref_min_score == -1.0 and src.info.ref_max_score == 2.5
        assert src.info.extra == {"note": "x"}
        for a, b in zip(eps, src):
            assert b.length == a.length
            assert b.has_final_observation == a.has_final_observation
            np.testing.assert_array_equal(b.observations[STATE_KEY], a.observations[STATE_KEY])
            np.testing.assert_array_equal(b.actions, a.actions)
            np.testing.assert_array_equal(b.rewards, a.rewards)
            np.testing.assert_array_equal(b.terminations, a.terminations)
            np.testing.assert_array_equal(b.truncations, a.truncations)
            assert b.seed == a.seed and b.source_id == a.source_id


def test_images_are_chunked_per_frame_and_compressed(tmp_path):
    e = make_episode(4, image=True)
    out = tmp_path / "img.hdf5"
    with EpisodeWriter(out, INFO) as w:
        w.add(e)
    with h5py.File(out) as f:
        d = f["episodes/ep_000000/observations/pixels"]
        assert d.dtype == np.uint8 and d.chunks == (1, 8, 8, 3) and d.compression == "gzip"
    with NativeSource(out) as src:
        np.testing.assert_array_equal(src.frames(0, "pixels")[2], e.observations["pixels"][2])


def test_existing_output_is_kept_without_overwrite(tmp_path):
    out = tmp_path / "d.hdf5"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        EpisodeWriter(out, INFO)
    assert out.read_bytes() == b"precious"


def test_failure_mid_write_leaves_old_file_and_no_partial(tmp_path):
    out = tmp_path / "d.hdf5"
    out.write_bytes(b"precious")
    bad = make_episode(3)
    bad.actions[1, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        with EpisodeWriter(out, INFO, overwrite=True) as w:
            w.add(make_episode(3))
            w.add(bad)
    assert out.read_bytes() == b"precious"
    assert not (tmp_path / "d.hdf5.partial").exists()


def test_killed_writer_leaves_a_readable_partial_file_with_flushed_episodes(tmp_path):
    # kill -9 right after the second episode: no cleanup runs, the output path is untouched and
    # the partial file still reads back both flushed episodes.
    import subprocess
    import sys
    out = tmp_path / "d.hdf5"
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_native_format import INFO, make_episode
from mtm.data.formats.native import EpisodeWriter
w = EpisodeWriter({str(out)!r}, INFO)
w.add(make_episode(3, seed=1))
w.add(make_episode(2, seed=2))
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    assert not out.exists()
    with NativeSource(tmp_path / "d.hdf5.partial") as src:
        assert len(src) == 2 and [e.length for e in src] == [3, 2]


def test_a_stop_signal_during_the_commit_waits_until_the_file_is_saved(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM arriving while the writer commits (here: at its fsync) is held until the
    file is in place, then raised as it came: the episodes written are kept."""
    import signal

    import mtm.data.formats.native as native
    from mtm.interrupts import Terminated, sigterm_as_interrupt

    real = native.os.fsync
    for signum, raised in ((signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)):
        out = tmp_path / f"d{signum}.hdf5"

        def fsync_then_signal(fd, signum=signum):
            real(fd)
            signal.raise_signal(signum)

        monkeypatch.setattr(native.os, "fsync", fsync_then_signal)
        with sigterm_as_interrupt(), pytest.raises(raised):  # as under the mtm command
            with EpisodeWriter(out, INFO) as w:
                w.add(make_episode(3))
                w.add(make_episode(2, seed=2))
        monkeypatch.setattr(native.os, "fsync", real)
        with NativeSource(out) as src:
            assert [e.length for e in src] == [3, 2]
        assert not (tmp_path / f"d{signum}.hdf5.partial").exists()


def test_a_sigterm_recorded_under_hdf5_is_raised_as_sigterm(tmp_path):
    from mtm.interrupts import Terminated

    with EpisodeWriter(tmp_path / "d.hdf5", INFO) as w:
        w._raw.failure = Terminated()
        with pytest.raises(Terminated):
            w._raise_write_failure(OSError("under HDF5"))
        w._raw.failure = None


def test_an_image_key_that_turns_into_numbers_is_rejected_and_the_file_kept_clean(tmp_path):
    frames = make_episode(3, image=True)
    floats = make_episode(2, image=True, seed=2)
    floats.observations["pixels"] = floats.observations["pixels"].astype(np.float32)
    with pytest.raises(DataError, match="'pixels' holds numbers, the first episode's held uint8 image frames"):
        with EpisodeWriter(tmp_path / "d.hdf5", INFO) as w:
            w.add(frames)
            w.add(floats)
    assert not (tmp_path / "d.hdf5").exists()


def test_layout_change_between_episodes_is_rejected(tmp_path):
    with pytest.raises(DataError, match="per-step shape"):
        with EpisodeWriter(tmp_path / "d.hdf5", INFO) as w:
            w.add(make_episode(3, obs_dim=3))
            w.add(make_episode(3, obs_dim=4))


@pytest.mark.parametrize("content,match", [(None, "no such file"), (b"hello", "not an HDF5"),
                                           (b"\x89HDF\r\n\x1a\n" + b"\0" * 40, "truncated or corrupt")])
def test_bad_files_give_one_clear_error(tmp_path, content, match):
    p = tmp_path / "x.hdf5"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(DataError, match=match):
        NativeSource(p)


def test_episode_validation_messages():
    e = make_episode(4)
    e.rewards = e.rewards[:3]
    with pytest.raises(DataError, match=r"rewards has shape \(3,\)"):
        e.validate()
    e = make_episode(4)
    e.terminations[1] = True
    with pytest.raises(DataError, match="done at step 1"):
        e.validate()


def test_episode_reads_only_requested_observation_keys(tmp_path):
    out = tmp_path / "img.hdf5"
    with EpisodeWriter(out, INFO) as w:
        w.add(make_episode(4, image=True))
    with NativeSource(out) as src:
        assert set(src.episode(0).observations) == {STATE_KEY, "pixels"}
        assert set(src.episode(0, keys=[STATE_KEY]).observations) == {STATE_KEY}
        with pytest.raises(DataError, match=r"no observation key 'depth'; available: pixels, state"):
            src.episode(0, keys=["depth"])
