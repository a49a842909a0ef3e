"""Normalised scores that cannot be silently wrong: references are checked against the data's own
mean return, suspect ones are named in one warning line, and mtm's table replaces them where it has
the env (envs.references.choose_references; `mtm inspect`, `mtm eval` and training evaluation)."""

import copy
import dataclasses
import json
import warnings

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from envs.references import (D4RL_PROVENANCE, PLAUSIBLE_NORMALISED, check_references, choose_references,
                             reference_entry, reference_scores)
from mtm.cli import main
from mtm.errors import MTMWarning
from mtm.evaluation.rollouts import evaluate_checkpoint, references_for

HOPPER = reference_entry("Hopper-v5")


def test_plausible_references_pass_and_placeholders_do_not():
    assert check_references(HOPPER[0], HOPPER[1], 1029.4) is None  # hopper-medium-v5: 33.7
    assert check_references(0.0, 1.0, None) is None  # no rewards: nothing to check against
    problem = check_references(0.0, 1.0, 1029.4)
    assert "102940.0 normalised" in problem and f"outside {PLAUSIBLE_NORMALISED[0]:g} .. " in problem
    assert "not below" in check_references(5.0, 5.0, None)


def test_the_datasets_own_references_win_when_they_fit_its_returns():
    chosen = choose_references((0.0, 2000.0), "dataset (minari: x)", "Hopper-v5", 1000.0)
    assert chosen == {"min": 0.0, "max": 2000.0, "source": "dataset (minari: x)"}


def test_suspect_references_fall_back_to_mtms_table_and_say_so():
    chosen = choose_references((0.0, 1.0), "dataset (minari: x)", "Hopper-v5", 1029.4)
    assert (chosen["min"], chosen["max"], chosen["source"]) == HOPPER
    warning = chosen["warning"]
    assert "\n" not in warning
    assert "the references of dataset (minari: x) look wrong" in warning
    assert "mtm's table for Hopper-v5 instead" in warning


def test_suspect_references_without_a_table_entry_are_kept_with_a_warning():
    chosen = choose_references((0.0, 1.0), "dataset (native: y)", "Foo-v0", 500.0)
    assert (chosen["min"], chosen["max"]) == (0.0, 1.0)
    assert "no references for Foo-v0" in chosen["warning"] and "--ref-min/--ref-max" in chosen["warning"]


def test_table_references_that_do_not_fit_the_data_are_questioned():
    chosen = choose_references(None, "-", "Reacher-v5", 1000.0)  # Reacher returns are negative
    assert chosen["source"] == reference_entry("Reacher-v5")[2]
    assert "is Reacher-v5 the data's env?" in chosen["warning"]
    assert choose_references(None, "-", "Foo-v0", 1.0) is None


def test_walker2d_v5_uses_d4rls_constants_and_says_so():
    low, high, provenance = reference_entry("Walker2d-v5")
    assert (low, high) == reference_scores("walker2d-medium-v2")
    assert "D4RL" in provenance and "not measured on v5" in provenance and provenance != D4RL_PROVENANCE
    # No honest source for these (see envs/references.py).
    assert reference_entry("Ant-v5") is None and reference_entry("Humanoid-v5") is None


def write_minari_hopper(root, ref_min, ref_max, returns=(1000.0, 1100.0)):
    """A Minari folder for Hopper-v5 whose metadata carries the given references."""
    data = root / "data"
    data.mkdir(parents=True)
    t = 4
    (data / "metadata.json").write_text(json.dumps({
        "dataset_id": "test/hopper-v0", "total_episodes": len(returns), "total_steps": t * len(returns),
        "data_format": "hdf5", "ref_min_score": ref_min, "ref_max_score": ref_max,
        "env_spec": json.dumps({"id": "Hopper-v5"})}))
    with h5py.File(data / "main_data.hdf5", "w") as f:
        for i, episode_return in enumerate(returns):
            g = f.create_group(f"episode_{i}")
            g["observations"] = np.zeros((t + 1, 11))
            g["actions"] = np.zeros((t, 3), np.float32)
            g["rewards"] = np.full(t, episode_return / t)
            g["terminations"] = np.eye(t, dtype=bool)[-1]
            g["truncations"] = np.zeros(t, bool)
    return root


def test_inspect_warns_in_one_line_and_uses_the_table(tmp_path):
    root = write_minari_hopper(tmp_path / "hopper", 0.0, 1.0)
    result = CliRunner().invoke(main, ["inspect", str(root)])
    assert result.exit_code == 0, result.output
    warning_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warning_lines) == 1 and warning_lines[0].startswith("warning: the references of dataset (minari")
    assert "mtm's table for Hopper-v5 instead" in warning_lines[0]
    expected = 100 * (1050.0 - HOPPER[0]) / (HOPPER[1] - HOPPER[0])
    assert f"reference  min {HOPPER[0]:.1f}   max {HOPPER[1]:.1f}   normalised mean return {expected:.1f}" \
        in result.stdout
    assert f"from {HOPPER[2]}   (suspect: see the warning)" in result.stdout

    summary = json.loads(CliRunner().invoke(main, ["inspect", str(root), "--json"]).stdout)
    assert summary["normalized_return_mean"] == pytest.approx(expected)


def test_inspect_keeps_good_references_quietly(tmp_path):
    root = write_minari_hopper(tmp_path / "hopper", 0.0, 2000.0)
    result = CliRunner().invoke(main, ["inspect", str(root)])
    assert result.exit_code == 0 and result.stderr == ""
    assert "normalised mean return 52.5" in result.stdout and "from dataset (minari: " in result.stdout


def test_eval_falls_back_and_warns_before_the_rollouts(reacher_run):
    from mtm.checkpoint import load_checkpoint

    ck = load_checkpoint(reacher_run)
    ck.metadata = copy.deepcopy(ck.metadata)
    ck.metadata["data_info"].update(ref_min_score=0.0, ref_max_score=1.0)  # placeholders
    refs = references_for(ck.run_metadata, "Reacher-v5")
    assert (refs["min"], refs["max"]) == reference_scores("Reacher-v5") and "warning" in refs
    with pytest.warns(MTMWarning, match="look wrong.*mtm's table for Reacher-v5 instead"):
        report = evaluate_checkpoint(ck, episodes=1, num_envs=1)
    assert report["reference_scores"]["source"] == reference_entry("Reacher-v5")[2]
    low, high = reference_scores("Reacher-v5")
    assert report["normalized_score_mean"] == pytest.approx(100 * (report["return_mean"] - low) / (high - low))

    meta = ck.run_metadata  # typed and read once: a changed copy of it, not of ck.metadata
    none = meta.replace(data_info=dataclasses.replace(meta.data_info, ref_min_score=None, ref_max_score=None))
    with warnings.catch_warnings():  # the table, quietly
        warnings.simplefilter("error", MTMWarning)
        assert "warning" not in references_for(none, "Reacher-v5")


def test_a_walker2d_v5_file_gets_references_from_the_table(tmp_path):
    from test_convert_inspect import write_robomimic

    path = write_robomimic(tmp_path / "walker.hdf5", lengths=(4, 4))
    with h5py.File(path, "r+") as f:  # a Walker2d-v5 recording with a return of 1000 per demo
        f["data"].attrs["env_args"] = json.dumps({"env_name": "Walker2d-v5", "type": 1, "env_kwargs": {}})
        for name in ("demo_0", "demo_1"):
            f["data"][name]["rewards"][...] = 250.0
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0 and result.stderr == "", result.output
    low, high, provenance = reference_entry("Walker2d-v5")
    assert f"reference  min {low:.1f}   max {high:.1f}   normalised mean return " \
           f"{100 * (1000 - low) / (high - low):.1f}" in result.stdout
    assert f"from {provenance}" in result.stdout
