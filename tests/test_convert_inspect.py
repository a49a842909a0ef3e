import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from mtm.cli import main
from mtm.data.episode import STATE_KEY
from mtm.data.formats import detect_format, open_dataset
from mtm.data.formats.d4rl import D4RLSource
from mtm.data.formats.native import NativeSource
from mtm.data.summary import length_histogram, summarize
from mtm.errors import ConfigError, DataError
from test_formats_d4rl import d4rl_arrays, write_d4rl


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# ---- format detection -------------------------------------------------------------------------

def test_detects_native_and_d4rl(d4rl_file, native_file):
    assert detect_format(d4rl_file) == "d4rl"
    assert detect_format(native_file) == "native"
    assert isinstance(open_dataset(d4rl_file), D4RLSource)
    with open_dataset(native_file) as src:
        assert isinstance(src, NativeSource) and len(src) == 2


def test_unknown_layout_lists_what_was_found(tmp_path):
    path = tmp_path / "odd.hdf5"
    with h5py.File(path, "w") as f:
        f["states"] = np.zeros(3)
        f.create_group("stuff")
    with pytest.raises(DataError, match=r"unrecognised dataset layout \(top level: states, stuff/\); "
                                        r"mtm reads native, d4rl, minari, robomimic files"):
        detect_format(path)


def test_directory_that_is_not_minari_is_rejected(tmp_path):
    with pytest.raises(DataError, match="not a Minari dataset"):
        detect_format(tmp_path)


def test_unknown_format_name_and_misplaced_filter_key(d4rl_file):
    with pytest.raises(ConfigError, match="unknown dataset format 'hdf5'; choose one of native, d4rl"):
        open_dataset(d4rl_file, "hdf5")
    with pytest.raises(ConfigError, match="filter key only applies to robomimic"):
        open_dataset(d4rl_file, filter_key="train")


def test_forced_format_that_does_not_fit(native_file):
    with pytest.raises(DataError, match="missing D4RL dataset"):
        open_dataset(native_file, "d4rl")


# ---- summary ----------------------------------------------------------------------------------

def test_summary_of_a_hand_built_file(d4rl_file):
    with open_dataset(d4rl_file) as src:
        s = summarize(src)
    assert s["format"] == "d4rl" and s["env_id"] == "Hopper-v5"
    assert (s["num_episodes"], s["num_steps"]) == (3, 9)
    assert s["episodes_ended"] == {"terminated": 1, "truncated": 1, "partial": 1}
    returns = np.array([3.0, 18.0, 15.0])
    histogram = s["returns"].pop("histogram")
    assert s["returns"] == pytest.approx({"min": 3.0, "mean": 12.0, "std": returns.std(ddof=0), "max": 18.0})
    assert [b["count"] for b in histogram] == [1] + [0] * 7 + [1, 1]  # 3, then 15 and 18 in 1.5-wide bins
    assert (histogram[0]["low"], histogram[-1]["high"]) == (3.0, 18.0)
    assert s["episode_lengths"]["min"] == 2 and s["episode_lengths"]["max"] == 4
    assert s["episode_lengths"]["mean"] == pytest.approx(3.0)
    assert s["has_final_observation"] is True
    assert s["modalities"] == {"observations/state": {"shape": [2], "dtype": "float32"},
                               "actions": {"shape": [3], "dtype": "float32"},
                               "rewards": {"shape": [], "dtype": "float32"}}
    ref_min, ref_max = s["reference_scores"]["min"], s["reference_scores"]["max"]
    assert s["normalized_return_mean"] == pytest.approx(100 * (12.0 - ref_min) / (ref_max - ref_min))
    json.dumps(s)  # JSON-able as is


def test_length_histogram_covers_every_length():
    lengths = np.array([1, 1, 2, 10, 25, 25])
    bins = length_histogram(lengths)
    assert bins[0]["low"] == 1 and bins[-1]["high"] == 25
    assert sum(b["count"] for b in bins) == 6 and len(bins) <= 10
    assert all(b["high"] + 1 == nxt["low"] for b, nxt in zip(bins, bins[1:]))
    assert length_histogram(np.array([1000, 1000])) == [{"low": 1000, "high": 1000, "count": 2}]


def test_shared_datasets_match_their_published_figures(shared_datasets):
    expected = json.loads((shared_datasets / "summary.json").read_text())
    for name, e in expected.items():
        # How fast: scripts/bench_data.py ("summarize"); a shared CI machine makes a timed assert flaky.
        with open_dataset(shared_datasets / e["file"]) as src:
            s = summarize(src)
        assert (s["num_episodes"], s["num_steps"]) == (e["episodes"], e["steps"]), name
        ended = s["episodes_ended"]
        assert ended["terminated"] == e["terminal_episodes"], name
        assert ended["truncated"] == e["timeout_episodes"], name
        # The README: where the 100,000-transition limit falls inside an episode, it is kept as partial.
        assert ended["partial"] == e["episodes"] - e["terminal_episodes"] - e["timeout_episodes"]
        r = s["returns"]
        for key in ("mean", "std", "min", "max"):
            assert r[key] == pytest.approx(e[f"return_{key}"], abs=0.1), (name, key)
        assert s["episode_lengths"]["mean"] == pytest.approx(e["len_mean"])
        reference = {"min": e["ref_random_return"], "max": e["ref_expert_return"]}
        assert {k: s["reference_scores"][k] for k in ("min", "max")} == pytest.approx(reference)
        assert "warning" not in s["reference_scores"], name  # the shared data passes the sanity check
        assert s["has_final_observation"] is True


# ---- mtm inspect ------------------------------------------------------------------------------

def test_inspect_report_and_json(d4rl_file):
    result = run("inspect", d4rl_file)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0] == str(d4rl_file)
    assert "episodes   3   terminated 1, truncated 1, partial 1" in out
    assert "returns    mean 12.0 +/- 6.5   min 3.0   max 18.0" in out
    assert "observations/state  (2,)  float32" in out
    # One histogram row per length 2, 3, 4, each with its count.
    assert [line.split()[-1] for line in out.splitlines()[-3:]] == ["1", "1", "1"]

    result = run("inspect", d4rl_file, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    with open_dataset(d4rl_file) as src:
        assert data == {"path": str(d4rl_file), **json.loads(json.dumps(summarize(src)))}


def test_inspect_a_shared_dataset(shared_datasets):
    result = run("inspect", shared_datasets / "hopper-medium-v5.hdf5")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "env        Hopper-v5" in out
    assert "episodes   314   terminated 313, truncated 0, partial 1" in out
    assert "steps      100000   final observation recorded: yes" in out
    assert "returns    mean 1029.4 +/- 146.1   min 617.1   max 1324.4" in out
    assert "reference  min 17.9   max 3020.1   normalised mean return 33.7" in out
    lines = out.splitlines()
    returns_at = next(i for i, line in enumerate(lines) if line.startswith("  returns "))
    lengths_at = next(i for i, line in enumerate(lines) if line.startswith("  lengths "))
    for histogram in (lines[returns_at + 1:returns_at + 11], lines[lengths_at + 1:]):  # returns, lengths
        assert len(histogram) == 10 and sum(int(line.split()[-1]) for line in histogram) == 314


# ---- mtm convert ------------------------------------------------------------------------------

def test_convert_d4rl_round_trip_gives_identical_episodes(d4rl_file, tmp_path):
    out = tmp_path / "out.hdf5"
    result = run("convert", d4rl_file, out)
    assert result.exit_code == 0, result.output
    assert f"wrote 3 episodes, 9 steps to {out}" in result.stdout
    with D4RLSource(d4rl_file) as a, NativeSource(out) as b:
        assert len(a) == len(b) == 3
        assert b.info.source_format == "d4rl" and b.info.source == a.info.source
        assert b.info.env_id == "Hopper-v5"
        assert (b.info.ref_min_score, b.info.ref_max_score) == (a.info.ref_min_score, a.info.ref_max_score)
        assert b.info.observation_space == a.info.observation_space
        assert b.info.extra == a.info.extra
        for ea, eb in zip(a, b):
            for name in ("actions", "rewards", "terminations", "truncations"):
                np.testing.assert_array_equal(getattr(eb, name), getattr(ea, name))
            np.testing.assert_array_equal(eb.observations[STATE_KEY], ea.observations[STATE_KEY])
            assert eb.source_id == ea.source_id
        # Read episode by episode, the native file summarises exactly like the flat D4RL file.
        sa, sb = summarize(a), summarize(b)
    assert sb["format"] == "native" and sb["source_format"] == "d4rl"
    for key in ("num_episodes", "num_steps", "returns", "episode_lengths", "episodes_ended",
                "modalities", "has_final_observation", "normalized_return_mean"):
        assert sb[key] == sa[key], key
    assert not list(tmp_path.glob("*.partial"))


def test_convert_records_env_id_and_reference_overrides(tmp_path):
    src = write_d4rl(tmp_path / "plain.hdf5", d4rl_arrays())
    assert run("convert", src, tmp_path / "a.hdf5", "--env-id", "HalfCheetah-v5").exit_code == 0
    with NativeSource(tmp_path / "a.hdf5") as a:
        assert a.info.env_id == "HalfCheetah-v5"
        assert a.info.ref_min_score == pytest.approx(-280.137, abs=1e-3)  # filled in from the table
    result = run("convert", src, tmp_path / "b.hdf5",
                 "--env-id", "Foo-v0", "--ref-min", "-1", "--ref-max", "2")
    assert result.exit_code == 0
    with NativeSource(tmp_path / "b.hdf5") as b:
        assert (b.info.env_id, b.info.ref_min_score, b.info.ref_max_score) == ("Foo-v0", -1.0, 2.0)


@pytest.mark.parametrize("args,message", [
    (["--ref-min", "1"], "--ref-min and --ref-max go together"),
    (["--ref-min", "2", "--ref-max", "1"], "--ref-min (2.0) must be below --ref-max (1.0)"),
    (["--filter-key", "train"], "filter key only applies to robomimic"),
])
def test_convert_option_errors(d4rl_file, tmp_path, args, message):
    result = run("convert", d4rl_file, tmp_path / "out.hdf5", *args)
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: {error_lines(result)[0][7:]}"] and message in result.stderr
    assert not (tmp_path / "out.hdf5").exists()


def test_convert_refuses_to_overwrite_without_the_flag(d4rl_file, tmp_path):
    out = tmp_path / "out.hdf5"
    out.write_bytes(b"precious")
    result = run("convert", d4rl_file, out)
    assert result.exit_code == 1
    assert error_lines(result) == [f"error: {out}: already exists; pass --overwrite to replace it"]
    assert out.read_bytes() == b"precious"
    assert run("convert", d4rl_file, out, "--overwrite").exit_code == 0
    with NativeSource(out) as src:
        assert len(src) == 3


def test_convert_onto_its_own_source_is_refused(native_file):
    result = run("convert", native_file, native_file, "--overwrite")
    assert result.exit_code == 1 and "SRC and DST are the same file" in result.stderr


def _bad_d4rl(edit):
    def make(path):
        arrays = d4rl_arrays()
        edit(arrays)
        write_d4rl(path, arrays)
    return make


def _truncated(path):
    write_d4rl(path, d4rl_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _unknown_layout(path):
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(2)


def _nan_obs(arrays):
    arrays["observations"] = arrays["observations"].copy()
    arrays["observations"][4, 0] = np.nan


@pytest.mark.parametrize("make,message", [
    (None, "no such file"),
    (lambda p: p.write_text("observations,actions\n"), "not an HDF5 file"),
    (_truncated, "HDF5 file is truncated or corrupt"),
    (_unknown_layout, "unrecognised dataset layout (top level: x)"),
    (_bad_d4rl(lambda a: a.pop("terminals")), "missing D4RL dataset(s) terminals"),
    (_bad_d4rl(lambda a: a.update(rewards=np.zeros(4, np.float32))),
     "'rewards' has 4 rows but 'observations' has 9"),
    (_bad_d4rl(_nan_obs), "'observations' holds NaN or inf (first at row 4)"),
])
def test_convert_errors_are_one_line_and_leave_no_output(tmp_path, make, message):
    src = tmp_path / "src.hdf5"
    if make is not None:
        make(src)
    out = tmp_path / "out.hdf5"
    result = run("convert", src, out)
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "out.hdf5.partial").exists()
    # inspect reports the same problem the same way.
    result = run("inspect", src)
    assert result.exit_code == 1 and len(error_lines(result)) == 1 and message in result.stderr


def test_convert_failing_mid_way_leaves_no_output_and_no_partial(native_file, tmp_path):
    # The second episode is damaged after the file was written: the first one has already been
    # copied when the reader notices, and the half-written output must disappear.
    with h5py.File(native_file, "a") as f:
        f["episodes/ep_000001/actions"][1, 0] = np.nan
    out = tmp_path / "out.hdf5"
    result = run("convert", native_file, out)
    assert result.exit_code == 1
    assert len(error_lines(result)) == 1 and "actions holds NaN or inf (first at step 1)" in result.stderr
    assert not out.exists() and not (tmp_path / "out.hdf5.partial").exists()


def write_minari(root, t: int = 3):
    """A one-episode Minari dataset folder, as Minari 0.5 lays it out (data/ + metadata.json)."""
    data = root / "data"
    data.mkdir(parents=True)
    (data / "metadata.json").write_text(json.dumps(
        {"dataset_id": "test/tiny-v0", "total_episodes": 1, "total_steps": t, "data_format": "hdf5"}))
    with h5py.File(data / "main_data.hdf5", "w") as f:
        g = f.create_group("episode_0")
        g["observations"] = np.arange((t + 1) * 2, dtype=np.float64).reshape(t + 1, 2)
        g["actions"] = np.ones((t, 1), np.float32)
        g["rewards"] = np.arange(t, dtype=np.float64)
        g["terminations"] = np.eye(t, dtype=bool)[-1]
        g["truncations"] = np.zeros(t, bool)
    return root


def test_detects_minari_folder_and_its_main_file_and_converts_it(tmp_path):
    root = write_minari(tmp_path / "tiny")
    assert detect_format(root) == "minari"
    assert detect_format(root / "data" / "main_data.hdf5") == "minari"
    out = tmp_path / "tiny.hdf5"
    result = run("convert", root, out)
    assert result.exit_code == 0, result.output
    with NativeSource(out) as src:
        e = src.episode(0)
        assert src.info.source_format == "minari"
        np.testing.assert_array_equal(e.observations[STATE_KEY][:, 1], [1, 3, 5, 7])
        assert e.terminated and e.episode_return == 3.0


def write_robomimic(path, lengths=(3, 2)):
    """A robomimic file with one demo per length and a 'train' filter holding only the last one."""
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {}})
        data.attrs["total"] = sum(lengths)
        for i, t in enumerate(lengths):
            g = data.create_group(f"demo_{i}")
            g.attrs["num_samples"] = t
            g["obs/eef_pos"] = np.full((t, 3), i, np.float64)
            g["actions"] = np.zeros((t, 7))
            g["rewards"] = np.zeros(t)
            g["dones"] = np.eye(t, dtype=np.int64)[-1]
        f["mask/train"] = np.array([f"demo_{len(lengths) - 1}".encode()])
    return path


def test_detects_robomimic_and_converts_a_filtered_split(tmp_path):
    src = write_robomimic(tmp_path / "lift.hdf5")
    assert detect_format(src) == "robomimic"
    out = tmp_path / "train.hdf5"
    result = run("convert", src, out, "--filter-key", "train")
    assert result.exit_code == 0, result.output
    assert "wrote 1 episode, 2 steps" in result.stdout
    with NativeSource(out) as native:
        assert native.info.source_format == "robomimic" and native.info.env_id == "Lift"
        assert native.episode(0).source_id == "demo_1"
        np.testing.assert_array_equal(native.episode(0).observations["eef_pos"], np.ones((2, 3)))
    result = run("inspect", src, "--json")
    assert json.loads(result.stdout)["num_episodes"] == 2
