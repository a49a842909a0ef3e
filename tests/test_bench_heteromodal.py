"""scripts/bench_heteromodal.py, the label-budget sweep: which episodes each seed labels, the partly
labelled file, resuming cell by cell, the deadline, and the table built from a results file. No
real training: the cells are stand-ins."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mtm.data.trajectories import load_trajectories
from test_heteromodal import episode, write

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_heteromodal.py"
if str(SCRIPT.parent) not in sys.path:
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports bench_common, as when run from scripts/
spec = importlib.util.spec_from_file_location("bench_heteromodal", SCRIPT)
bh = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bh)

LENGTHS = [5 + (i * 7) % 11 for i in range(40)]  # 40 episodes of 5..15 steps


@pytest.fixture
def full(tmp_path):
    return write(tmp_path / "full.hdf5", [episode(t, i) for i, t in enumerate(LENGTHS)])


# ---- which episodes are labelled ----------------------------------------------------------------


def test_the_labelled_episodes_are_training_episodes_never_held_out_ones(full):
    data = load_trajectories(full)
    train = bh.training_episodes(data)
    _, val = data.split(bh.VAL_FRACTION, bh.SPLIT_SEED)  # the split every run of the sweep uses
    held_out = set(int(i) for i in val.episode_ids)
    assert len(train) == 36 and held_out and not held_out & set(train)
    for seed in range(5):
        for budget in (1, 2, 5):
            assert set(bh.labelled_subset(train, budget, seed)) <= set(train)


def test_each_seed_labels_its_own_episodes_and_a_seeds_budgets_nest():
    train = list(range(3, 111))  # 108 training episodes, as hopper-expert-v5 has
    for budget in (1, 2, 5):
        subsets = [bh.labelled_subset(train, budget, seed) for seed in range(5)]
        assert all(len(s) == len(set(s)) == budget for s in subsets)  # right count, no repeats
        chosen = [i for s in subsets for i in s]
        assert len(set(chosen)) == 5 * budget  # disjoint across seeds
    for seed in range(5):
        one, two, five = (set(bh.labelled_subset(train, b, seed)) for b in (1, 2, 5))
        assert one <= two <= five
    # The same (episodes, budget, seed) always picks the same episodes.
    assert bh.labelled_subset(train, 2, 3) == bh.labelled_subset(list(train), 2, 3)


def test_with_too_few_training_episodes_seeds_still_get_the_right_count_and_differ():
    train = list(range(12))  # 5 seeds x a block of 5 do not fit: blocks wrap around
    subsets = [bh.labelled_subset(train, 5, seed) for seed in range(5)]
    assert all(len(set(s)) == 5 for s in subsets)
    assert not set(subsets[0]) & set(subsets[1])  # the first two blocks still fit side by side
    assert all(subsets[k] != subsets[k + 1] for k in range(4))
    with pytest.raises(ValueError):
        bh.labelled_subset(train, 13, 0)


def test_the_partly_labelled_file_keeps_whole_episodes_in_the_same_order(full, tmp_path):
    labelled = [3, 17, 30]
    dst = tmp_path / "partial.hdf5"
    steps = bh.write_partial(full, dst, labelled)
    data, complete = load_trajectories(dst), load_trajectories(full)
    assert steps == sum(LENGTHS)
    assert data.lengths.tolist() == LENGTHS  # same episodes, same order: the same held-out split
    assert np.flatnonzero(data.present["actions"]).tolist() == labelled  # every step of those, none of the others
    for i in labelled:
        rows = slice(data.starts[i], data.starts[i] + data.lengths[i])
        assert np.array_equal(data.arrays["actions"][rows], complete.arrays["actions"][rows])
    assert np.array_equal(data.arrays["states"], complete.arrays["states"])


# ---- resuming cell by cell ----------------------------------------------------------------------


def test_seed_zero_of_every_budget_row_and_dataset_comes_first():
    order = list(bh.cell_order(["a", "b"], [5, 1, 2], range(3), list(bh.ROWS)))
    assert len(order) == 2 * 3 * 3 * 3
    first = order[: 2 * 3 * 3]
    assert {seed for _, _, seed, _ in first} == {0}
    assert [b for _, b, _, _ in first[:: 2 * 3]] == [1, 2, 5]  # the smallest budget first
    assert first[:6] == [("a", 1, 0, r) for r in bh.ROWS] + [("b", 1, 0, r) for r in bh.ROWS]


def fake_record(ds, budget, seed, row, score):
    return {"dataset": ds, "budget": budget, "seed": seed, "row": row, "score": score,
            "labelled_episodes": list(range(budget)), "labelled_transitions": 1000 * budget, "cell_cpu_s": 60.0}


@pytest.fixture
def sweep(tmp_path, full, monkeypatch):
    """main() on a stand-in dataset, with run_cell replaced by a recorder: (argv, calls)."""
    data_dir = tmp_path / "datasets"
    data_dir.mkdir()
    (data_dir / "hopper-expert-v5.hdf5").write_bytes(full.read_bytes())
    monkeypatch.setattr(bh, "DATA_DIR", data_dir)
    calls = []

    def run_cell(ds, budget, seed, row, info, args, env, deadline):
        calls.append((ds, budget, seed, row))
        if len(calls) == 4 and not getattr(run_cell, "survived", False):
            run_cell.survived = True
            raise KeyboardInterrupt  # the sweep is killed in its 4th cell
        return fake_record(ds, budget, seed, row, 50.0 + seed)

    monkeypatch.setattr(bh, "run_cell", run_cell)
    results = tmp_path / "results.json"
    argv = ["bench_heteromodal.py", "--datasets", "hopper-expert-v5", "--budgets", "1,2", "--seeds", "2",
            "--work", str(tmp_path / "w"), "--results", str(results), "--no-benchmarks"]
    return argv, calls, results


def test_a_killed_sweep_resumes_where_it_stopped_and_never_redoes_a_finished_cell(sweep, monkeypatch):
    argv, calls, results = sweep
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(KeyboardInterrupt):
        bh.main()
    assert len(json.loads(results.read_text())["cells"]) == 3  # the 3 finished before the kill
    calls.clear()
    assert bh.main() == 0
    order = list(bh.cell_order(["hopper-expert-v5"], [1, 2], range(2), list(bh.ROWS)))
    assert calls == order[3:]  # the killed cell again, then the rest; none of the finished ones
    assert len(json.loads(results.read_text())["cells"]) == len(order)
    calls.clear()
    assert bh.main() == 0
    assert calls == []  # everything finished: nothing runs


def test_a_sweep_with_other_settings_is_refused_rather_than_mixed_in(sweep, monkeypatch):
    argv, calls, results = sweep
    results.write_text(json.dumps({"settings": {"steps": 123}, "cells": {}}))
    monkeypatch.setattr(sys, "argv", argv)
    assert bh.main() == 1 and calls == []


def test_no_cell_starts_after_the_deadline(sweep, monkeypatch):
    import datetime

    argv, calls, results = sweep
    monkeypatch.setattr(sys, "argv", argv + ["--stop-at", "12:00"])
    monkeypatch.setattr(bh, "parse_stop_at", lambda text, start: start - datetime.timedelta(seconds=1))
    assert bh.main() == 0 and calls == []


def test_a_command_is_not_started_past_the_deadline_and_gets_ctrl_c_at_it(tmp_path, monkeypatch):
    import datetime

    started = []
    monkeypatch.setattr(bh.bench_common, "run_command",
                        lambda cmd, env, cwd, **kw: started.append(list(map(str, cmd))) or (0, "", {"cpu_s": 1.0}))
    late = bh.Commands(tmp_path / "s.json", {}, bh.now() - datetime.timedelta(seconds=1), dry_run=False)
    assert late.run("train", ["mtm", "train"]) is False and started == []
    soon = bh.Commands(tmp_path / "s.json", {}, bh.now() + datetime.timedelta(minutes=10), dry_run=False)
    assert soon.run("train", ["mtm", "train"]) is True
    # --foreground: timeout signals the command alone, not its process group as well (one SIGINT)
    assert started[0][:3] == ["timeout", "--foreground", "--signal=INT"] and started[0][-2:] == ["mtm", "train"]
    assert soon.run("train", ["mtm", "train"]) and soon.total("train", "cpu_s") == 2.0  # attempts add up


def test_stop_at_is_today_or_tomorrow_in_utc():
    import datetime

    start = datetime.datetime(2026, 12, 6, 3, 0, tzinfo=datetime.timezone.utc)
    assert bh.parse_stop_at("05:40", start) == start.replace(hour=5, minute=40)
    assert bh.parse_stop_at("02:00", start) == start.replace(day=7, hour=2)
    assert bh.parse_stop_at(None, start) is None


# ---- the table ----------------------------------------------------------------------------------


def results_file() -> dict:
    cells = {}
    for seed, (mlp, lab, mix) in enumerate([(40.0, 60.0, 80.0), (50.0, 70.0, 90.0), (60.0, 80.0, 100.0)]):
        for row, score in zip(bh.ROWS, (mlp, lab, mix)):
            rec = fake_record("hopper-expert-v5", 1, seed, row, score)
            rec["labelled_transitions"] = [1000, 688, 1000][seed]
            cells[bh.cell_key("hopper-expert-v5", 1, seed, row)] = rec
    for seed in range(5):
        rec = fake_record("halfcheetah-expert-v5", 5, seed, "mlp-bc", 90.0 + seed)
        cells[bh.cell_key("halfcheetah-expert-v5", 5, seed, "mlp-bc")] = rec
    cells[bh.cell_key("halfcheetah-expert-v5", 2, 0, "mtm-mixed")] = fake_record("halfcheetah-expert-v5", 2, 0,
                                                                                  "mtm-mixed", 77.0)
    return {"settings": {"steps": 7000, "episodes": 20, "precision": "auto", "threads": 1, "block": 5,
                         "val_fraction": 0.1, "split_seed": 0},
            "datasets": {"hopper-expert-v5": {"normalized_mean": 90.5}}, "cells": cells}


def test_the_table_has_the_issues_columns_and_mean_and_standard_error_over_seeds():
    block = bh.render(results_file())
    assert block.startswith(bh.BEGIN) and block.endswith(bh.END)
    assert ("| dataset | labelled episodes | labelled transitions | MLP-BC | MTM (labelled) | "
            "MTM (labelled + state-only) |") in block
    # 3 seeds of hopper at 1 episode: mean ± stdev / sqrt(3) = 10 / 1.73, n named below 5.
    assert "| hopper-expert-v5 | 1 | 896 (688–1,000) | 50.0 ± 5.8 (n=3) | 70.0 ± 5.8 (n=3) | 90.0 ± 5.8 (n=3) |" in block
    # 5 seeds: no n; a row with no cell yet: a dash; a single seed: n=1, no spread.
    assert "| halfcheetah-expert-v5 | 5 | 5,000 | 92.0 ± 0.7 | – | – |" in block
    assert "| halfcheetah-expert-v5 | 2 | 2,000 | – | – | 77.0 (n=1) |" in block
    lines = block.splitlines()
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0:2] for r in rows] == [["| hopper-expert-v5", "1"], ["| halfcheetah-expert-v5", "2"],
                                                   ["| halfcheetah-expert-v5", "5"]]
    assert "Partial: 15 of the sweep's 90 cells" in block  # 2 datasets x 3 budgets x 3 rows x 5 seeds


def test_table_only_rebuilds_the_block_and_the_plot_from_the_results_file(tmp_path, monkeypatch):
    results = tmp_path / "r.json"
    results.write_text(json.dumps(results_file()))
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text(f"# head\n\n{bh.BEGIN}\nold\n{bh.END}\n\ntail\n")
    monkeypatch.setattr(bh, "BENCHMARKS", bench)
    monkeypatch.setattr(bh, "PLOT", tmp_path / "plot.png")
    monkeypatch.setattr(sys, "argv", ["bench_heteromodal.py", "--table-only", "--results", str(results)])
    assert bh.main() == 0
    text = bench.read_text()
    assert text.startswith("# head\n\n") and text.endswith("\n\ntail\n") and "old" not in text
    assert "| hopper-expert-v5 | 1 | 896 (688–1,000) |" in text
    if has_matplotlib():
        assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def has_matplotlib() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def test_dry_run_prints_three_rows_per_cell_and_writes_nothing(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--seeds", "1", "--budgets", "1",
                          "--steps", "7", "--datasets", "hopper-expert-v5", "--work", str(tmp_path / "w"),
                          "--results", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if "is absent" in out.stdout:
        pytest.skip("../shared/datasets is not present")
    lines = [line for line in out.stdout.splitlines() if line.startswith("$ ")]
    trains = [line for line in lines if " train " in line]
    assert len(trains) == 3 and all("train.steps=7" in line for line in trains)
    assert sum("data.only_with=[actions]" in line for line in trains) == 2
    assert sum("data.action_share=0.5" in line for line in trains) == 1
    assert sum("--task id --data" in line for line in lines) == 2
    assert not (tmp_path / "w").exists() and not (tmp_path / "r.json").exists()


def test_both_mtm_rows_train_with_the_inverse_dynamics_mask_and_the_settings_name_it(tmp_path):
    args = SimpleNamespace(steps=7, precision="auto", episodes=2, threads=1)
    cmds = {row: [str(a) for a in bh.train_command(row, tmp_path / "d.hdf5", tmp_path / row, 0, args)] for row in bh.ROWS}
    mask = "train.mask=random_autoregressive:0.5,inverse_dynamics:0.5"
    assert mask in cmds["mtm-labelled"] and mask in cmds["mtm-mixed"]
    assert not any(a.startswith("train.mask") for a in cmds["mlp-bc"])
    # cells made with another mask mixture are stale: a results file without it is refused
    assert bh.settings_of(args)["mtm_mask"] == "random_autoregressive:0.5,inverse_dynamics:0.5"
