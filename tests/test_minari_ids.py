"""Minari dataset ids (namespace/name-vN) resolved under the user's Minari data folder, and namespace
folders listed instead of being called "not a Minari dataset"."""

import pytest
from click.testing import CliRunner

from mtm.cli import main
from mtm.data.formats import DataSource, detect_format, open_dataset
from mtm.data.formats.minari import looks_like_dataset_id
from mtm.errors import DataError
from test_convert_inspect import write_minari


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    write_minari(root / "mujoco" / "hopper" / "expert-v0")
    write_minari(root / "mujoco" / "hopper" / "medium-v0", t=4)
    write_minari(root / "mujoco" / "walker2d" / "expert-v0", t=2)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    monkeypatch.chdir(tmp_path)  # relative ids must not be found as paths from elsewhere
    return root


@pytest.mark.parametrize("text, is_id", [("mujoco/hopper/expert-v0", True), ("D4RL/door/human-v2", True),
                                         ("hopper-v0", True), ("data/hopper.hdf5", False),
                                         ("./mujoco/hopper/expert-v0", False), ("/abs/x-v0", False),
                                         ("mujoco/hopper", False)])
def test_what_reads_as_an_id(text, is_id):
    assert looks_like_dataset_id(text) is is_id


def test_id_resolves_under_minari_datasets_path(root):
    assert detect_format("mujoco/hopper/medium-v0") == "minari"
    with open_dataset("mujoco/hopper/medium-v0") as src:
        assert len(src) == 1 and src.episode_length(0) == 4
    ds = DataSource.resolve("mujoco/walker2d/expert-v0")
    assert ds.format == "minari" and ds.path == str(root / "mujoco" / "walker2d" / "expert-v0")


def test_id_defaults_to_home_minari_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write_minari(tmp_path / ".minari" / "datasets" / "mujoco" / "hopper" / "expert-v0")
    assert detect_format("mujoco/hopper/expert-v0") == "minari"


def test_an_existing_path_wins_over_the_id(root, tmp_path):
    write_minari(tmp_path / "mujoco" / "hopper" / "expert-v0", t=5)  # relative to the working folder
    with open_dataset("mujoco/hopper/expert-v0") as src:
        assert src.episode_length(0) == 5


def test_inspect_and_convert_take_an_id(root, tmp_path):
    result = run("inspect", "mujoco/hopper/medium-v0", "--json")
    assert result.exit_code == 0, result.output
    assert '"num_steps": 4' in result.stdout
    out = tmp_path / "hopper.hdf5"
    result = run("convert", "mujoco/hopper/expert-v0", out)
    assert result.exit_code == 0, result.output
    assert f"wrote 1 episode, 3 steps to {out}" in result.stdout


def test_unknown_id_is_one_error_line_saying_where_it_looked(root):
    result = run("inspect", "mujoco/hopper/simple-v0")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: mujoco/hopper/simple-v0: no such file, and no Minari dataset of that id under "
                     f"{root} ($MINARI_DATASETS_PATH); download it with `minari download "
                     f"mujoco/hopper/simple-v0` or give the path of a dataset file"]


def test_unknown_version_names_the_versions_there(root):
    with pytest.raises(DataError, match="no Minari dataset of that id .* versions there: mujoco/hopper/expert-v0$"):
        detect_format("mujoco/hopper/expert-v3")


def test_unset_path_error_names_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"under .*\.minari/datasets \(Minari's default; set MINARI_DATASETS_PATH"):
        detect_format("mujoco/hopper/expert-v0")


def test_namespace_folder_lists_its_datasets(root):
    result = run("inspect", root / "mujoco")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: {root / 'mujoco'}: is a folder of 3 Minari datasets, not one dataset; give one of them: "
        f"mujoco/hopper/expert-v0, mujoco/hopper/medium-v0, mujoco/walker2d/expert-v0")


def test_namespace_folder_outside_the_minari_folder_lists_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_minari(tmp_path / "mine" / "a-v0")
    with pytest.raises(DataError, match=rf"a folder of 1 Minari dataset, not one dataset; give one of them: "
                                        rf"{tmp_path / 'mine' / 'a-v0'}$"):
        detect_format(tmp_path / "mine")


def test_empty_folder_is_still_not_a_minari_dataset(tmp_path):
    with pytest.raises(DataError, match="not a Minari dataset"):
        detect_format(tmp_path)


def test_train_data_takes_an_id_and_sees_it_given_twice(root):
    from mtm.training.run_data import same_file_pair
    folder = str(root / "mujoco" / "hopper" / "expert-v0")
    assert same_file_pair(["mujoco/hopper/expert-v0", "mujoco/hopper/medium-v0", folder]) == (0, 2)
    assert same_file_pair(["mujoco/hopper/nothing-v0", "mujoco/hopper/medium-v0"]) is None
    result = run("train", "--config", "small", "--data", "mujoco/hopper/expert-v0", "--data", folder,
                 "--run-dir", root.parent / "runs" / "x")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: one file given twice: --data mujoco/hopper/expert-v0 (1st) and --data ")


def test_train_with_an_unknown_id_is_one_error_line(root, tmp_path):
    result = run("train", "--config", "small", "--data", "mujoco/hopper/nothing-v0", "--run-dir", tmp_path / "runs" / "x")
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("mtm:")]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: mujoco/hopper/nothing-v0: no such file, and no Minari dataset of that id under {root}")


def test_dataset_identity_of_an_id_is_that_of_its_folder(root):
    from mtm.data.formats import resolve_path
    from mtm.data.identity import dataset_identity
    assert dataset_identity(resolve_path("mujoco/hopper/expert-v0")) == \
        dataset_identity(root / "mujoco" / "hopper" / "expert-v0")
