"""`mtm inspect` shows a robomimic file's filter keys (mask/<filter>) with their demo counts."""

import json

from click.testing import CliRunner

from mtm.cli import main
from test_formats_robomimic import make_demo, write_robomimic


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def lift(tmp_path, masks):
    demos = {f"demo_{i}": make_demo(t, i, image=False) for i, t in enumerate((3, 2, 4))}
    return write_robomimic(tmp_path / "lift.hdf5", demos, masks=masks)


MASKS = {"train": ["demo_0", "demo_2"], "valid": ["demo_1"], "20_percent": ["demo_1"]}


def test_text_report_lists_filters_and_counts(tmp_path):
    path = lift(tmp_path, MASKS)
    result = run("inspect", path)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("  filters")]
    assert rows == ["  filters    demos in 20_percent 1, train 2, valid 1   (--filter-key KEY reads one split)"]
    result = run("inspect", path, "--filter-key", "train")
    assert "  filters    demos in 20_percent 1, train 2, valid 1   (reading train)" in result.stdout
    assert "  episodes   2 " in result.stdout


def test_json_carries_filters(tmp_path):
    path = lift(tmp_path, MASKS)
    summary = json.loads(run("inspect", path, "--json").stdout)
    assert summary["filters"] == {"available": {"20_percent": 1, "train": 2, "valid": 1}, "selected": None}
    summary = json.loads(run("inspect", path, "--json", "--filter-key", "valid").stdout)
    assert summary["filters"]["selected"] == "valid" and summary["num_episodes"] == 1


def test_file_without_masks_says_so(tmp_path):
    path = lift(tmp_path, None)
    result = run("inspect", path)
    assert "  filters    none (the file has no mask/ group)" in result.stdout
    assert json.loads(run("inspect", path, "--json").stdout)["filters"] == {"available": {}, "selected": None}


def test_other_formats_have_no_filters_entry(tmp_path):
    from test_convert_inspect import write_minari
    root = write_minari(tmp_path / "tiny")
    summary = json.loads(run("inspect", root, "--json").stdout)
    assert "filters" not in summary
    assert "filters" not in run("inspect", root).stdout
