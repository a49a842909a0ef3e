"""Episodes of one dataset that disagree in shape, and data that does not fit a checkpoint."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import faultkit
from faultkit import error_line
from mtm.cli import main
from mtm.data.formats import open_dataset
from mtm.data.formats.native import EpisodeWriter
from mtm.errors import DataError
from test_convert_inspect import write_robomimic
from test_native_format import INFO, make_episode
from test_train import TINY, write_linear_system


def native_with_a_narrow_episode(path: Path, key: str = "observations/state") -> Path:
    """Three 11-D episodes written by mtm, then episode 1 replaced by a 7-D one; the file says it
    came from somewhere else, as a converted file does."""
    with EpisodeWriter(path, INFO) as w:
        for seed in range(3):
            w.add(make_episode(6, obs_dim=11, seed=seed))
    with h5py.File(path, "a") as f:
        f.attrs["source"] = "/elsewhere/original.hdf5"
        g = f["episodes/ep_000001"]
        shape = g[key].shape
        del g[key]
        g[key] = np.zeros((shape[0], 7), np.float32)
    return path


def robomimic_with_a_narrow_demo(path: Path) -> Path:
    def narrow(f):
        t = f["data/demo_1/actions"].shape[0]
        del f["data/demo_1/obs/eef_pos"]
        f["data/demo_1/obs/eef_pos"] = np.zeros((t, 2))
    write_robomimic(path, lengths=(3, 4, 2))
    with h5py.File(path, "a") as f:
        narrow(f)
    return path


def minari_with_a_narrow_episode(root: Path) -> Path:
    faultkit.write_minari(root)
    with h5py.File(root / "data" / "main_data.hdf5", "a") as f:
        del f["episode_1/observations"]
        f["episode_1/observations"] = np.zeros((5, 2), np.float32)
    return root


CASES = {
    "native state": (lambda tmp: native_with_a_narrow_episode(tmp / "n.hdf5"),
                     "{path} ep_000001: observations/state has per-step shape (7,) but ep_000000 has (11,)"),
    "native actions": (lambda tmp: native_with_a_narrow_episode(tmp / "n.hdf5", key="actions"),
                       "{path} ep_000001: actions has per-step shape (7,) but ep_000000 has (2,)"),
    "robomimic": (lambda tmp: robomimic_with_a_narrow_demo(tmp / "r.hdf5"),
                  "{path} demo_1: observations/eef_pos has per-step shape (2,) but demo_0 has (3,)"),
    "minari": (lambda tmp: minari_with_a_narrow_episode(tmp / "m"),
               "episode_1: observations/state has per-step shape (2,) but episode_0 has (3,)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_command_names_the_episode_and_the_file_given(tmp_path, case):
    make, message = CASES[case]
    path = make(tmp_path)
    expected = message.format(path=path)
    for args in (["inspect", path], ["convert", path, tmp_path / "out.hdf5"],
                 ["train", "--no-progress", "--data", path, "--run-dir", tmp_path / "run", "--set", "train.steps=2",
                  *[a for item in TINY for a in ("--set", item)]]):
        line = error_line(CliRunner().invoke(main, [str(a) for a in args]))
        assert expected in line and "every episode of a dataset must have the same shapes" in line, (args, line)
        assert "/elsewhere/" not in line
    assert not (tmp_path / "out.hdf5").exists() and not (tmp_path / "run").exists()


def test_random_access_compares_with_episode_zero(tmp_path):
    path = native_with_a_narrow_episode(tmp_path / "n.hdf5")
    with open_dataset(path) as src:
        with pytest.raises(DataError, match=r"ep_000001: observations/state has per-step shape \(7,\) but ep_000000"):
            src.episode(1)  # read first: episode 0 is consulted all the same
        assert src.episode(2).observations["state"].shape == (7, 11)


def test_eval_task_on_data_of_another_size(reacher_run, tmp_path):
    other = write_linear_system(tmp_path / "linear.hdf5", episodes=6, length=10)  # 4-D states, 2-D actions
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(reacher_run), "--task", "fd", "--data", str(other)])
    line = error_line(result)
    assert line == (f"error: {other}: states have 4 dimensions and actions 2, but the checkpoint was trained on "
                    f"10 and 2; give the dataset it was trained on (or one of the same env)")
