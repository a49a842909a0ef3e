"""The histogram of episode returns in `mtm inspect` (text bars, like its length histogram, and JSON)."""

import json

import numpy as np
from click.testing import CliRunner

from mtm.cli import main
from mtm.data.summary import return_histogram
from test_formats_robomimic import make_demo, write_robomimic


def test_bins_cover_min_to_max_and_count_every_episode():
    returns = np.array([-10.0, -9.0, 0.0, 5.0, 10.0])
    bins = return_histogram(returns, bins=4)
    assert [(b["low"], b["high"]) for b in bins] == [(-10.0, -5.0), (-5.0, 0.0), (0.0, 5.0), (5.0, 10.0)]
    assert [b["count"] for b in bins] == [2, 0, 1, 2]  # 0 and 5 open their bins; the maximum closes the last


def test_equal_returns_make_one_bin():
    assert return_histogram(np.array([2.5, 2.5, 2.5])) == [{"low": 2.5, "high": 2.5, "count": 3}]


def test_inspect_prints_and_exports_the_histogram(tmp_path):
    demos = {f"demo_{i}": make_demo(3, i, image=False) for i in range(3)}
    for i, d in enumerate(demos.values()):
        d["rewards"] = np.full(3, float(i))  # returns 0, 3, 6
    path = write_robomimic(tmp_path / "r.hdf5", demos)
    result = CliRunner().invoke(main, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  returns "))
    assert lines[at] == "  returns    mean 3.0 +/- 2.4   min 0.0   max 6.0"
    assert lines[at + 1] == "             0.0 .. 0.6  " + "#" * 40 + "  1"
    assert lines[at + 5] == "             2.4 .. 3.0  " + " " * 40 + "  0"
    assert lines[at + 6] == "             3.0 .. 3.6  " + "#" * 40 + "  1"
    assert lines[at + 10] == "             5.4 .. 6.0  " + "#" * 40 + "  1"
    assert lines[at + 11].startswith("  reference")
    summary = json.loads(CliRunner().invoke(main, ["inspect", str(path), "--json"]).stdout)
    assert [b["count"] for b in summary["returns"]["histogram"]] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]


def test_negative_returns_read_as_ranges(tmp_path):
    demos = {f"demo_{i}": make_demo(2, i, image=False) for i in range(2)}
    for i, d in enumerate(demos.values()):
        d["rewards"] = np.full(2, -5.0 * (i + 1))  # returns -10, -20
    result = CliRunner().invoke(main, ["inspect", str(write_robomimic(tmp_path / "r.hdf5", demos))])
    assert "             -20.0 .. -19.0  " + "#" * 40 + "  1" in result.stdout.splitlines()
    assert "             -11.0 .. -10.0  " + "#" * 40 + "  1" in result.stdout.splitlines()
