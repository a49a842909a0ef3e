"""scripts/bench_beyond.py, the "Beyond the data" sweep (issue #23): its cell order, the commands of
each row, refusing other settings, resuming cell by cell, and the tables built from a partial
results file; one tiny real sweep end to end (slow)."""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_beyond.py"
if str(SCRIPT.parent) not in sys.path:
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports bench_common and sweep_cells, as when run from scripts/
spec = importlib.util.spec_from_file_location("bench_beyond", SCRIPT)
bb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bb)

import bench_common  # noqa: E402  (after the path above)


def args_of(**changes) -> SimpleNamespace:
    """The parsed defaults of the script, with `changes`."""
    return SimpleNamespace(**{**vars(bb.build_parser().parse_args([])), **changes})


# ---- cells and their commands -------------------------------------------------------------------


def test_seed_zero_of_every_dataset_and_row_comes_first_a_datasets_rows_side_by_side():
    order = list(bb.cell_order(["a", "b"], range(3), list(bb.ROWS)))
    assert len(order) == 2 * 3 * 3
    assert {seed for _, seed, _ in order[:6]} == {0} and {seed for _, seed, _ in order[6:12]} == {1}
    assert order[:6] == [("a", 0, r) for r in bb.ROWS] + [("b", 0, r) for r in bb.ROWS]
    assert list(bb.ROWS) == ["mlp-bc", "iql", "mtm"]


def test_the_defaults_are_the_configs_own_steps_and_eight_critic_updates():
    args = args_of()
    assert (args.mlp_steps, args.iql_steps, args.mtm_steps, args.critic_updates) == (3000, 100000, 7000, 8)
    assert args.seeds == 3 and args.episodes == 20 and args.num_envs == 10 and args.precision == "auto"
    assert args.results == bb.ROOT / "results" / "beyond_the_data.json"
    assert bb.DATASETS[:2] == ["hopper-medium-replay-v5", "halfcheetah-medium-replay-v5"] and len(bb.DATASETS) == 6


def test_each_row_trains_its_config_with_the_seed_on_cpu_and_mtm_gets_the_critic(tmp_path):
    args = args_of(mtm_set=["model.critic_width=64"], work=tmp_path)
    cmds = {row: [str(a) for a in bb.train_command(row, [Path("d.hdf5")], tmp_path / row, 2, args)] for row in bb.ROWS}
    for row, config, steps in (("mlp-bc", "mlp-bc", 3000), ("iql", "mlp-iql", 100000), ("mtm", "small", 7000)):
        cmd = " ".join(cmds[row])
        assert f"--config {config} " in cmd and f"train.steps={steps} " in cmd
        assert "train.seed=2 " in cmd and "train.device=cpu " in cmd and "train.precision=auto " in cmd
        assert cmds[row][-1] == "--no-progress"  # a new run directory: nothing to overwrite
    mtm = " ".join(cmds["mtm"])
    assert "--set model.critic=true --set model.critic_updates=8 --set model.critic_width=64" in mtm
    assert "critic" not in " ".join(cmds["mlp-bc"]) + " ".join(cmds["iql"])


def test_the_mixture_trains_on_both_files_and_its_behaviour_is_both_files_episodes(tmp_path, monkeypatch):
    monkeypatch.setattr(bb, "DATA_DIR", tmp_path)
    files = bb.data_files("hopper-medium-expert-v5")
    assert [f.name for f in files] == ["hopper-medium-v5.hdf5", "hopper-expert-v5.hdf5"]
    assert bb.data_files("hopper-medium-v5") == [tmp_path / "hopper-medium-v5.hdf5"]
    cmd = [str(a) for a in bb.train_command("mtm", files, Path("run"), 0, args_of())]
    assert cmd[cmd.index("--data") : cmd.index("--data") + 4] == ["--data", str(files[0]), "--data", str(files[1])]
    bench_common.write_hopper_like(files[0], 3000, seed=0)
    bench_common.write_hopper_like(files[1], 2000, seed=1)
    one, two = bb.load_trajectories(files[0]), bb.load_trajectories(files[1])
    info = bb.dataset_info("hopper-medium-expert-v5")
    assert info["episodes"] == one.num_episodes + two.num_episodes
    best = max(max(one.episode_returns()), max(two.episode_returns()))
    lo, hi = one.info.ref_min_score, one.info.ref_max_score
    assert info["normalized_best_episode"] == pytest.approx(100 * (best - lo) / (hi - lo))
    assert "hopper-medium-expert-v5" in bb.build_parser().parse_args([]).datasets.split(",")


def test_the_mixture_is_its_own_table_beside_the_six_with_each_seeds_score():
    results = {"settings": bb.settings_of(args_of()), "datasets": {"hopper-medium-expert-v5": {
        "normalized_mean": 60.0, "normalized_best_episode": 110.0}}, "cells": {}}
    for seed, score in enumerate([68.0, 100.0, 104.0]):
        results["cells"][f"hopper-medium-expert-v5/seed{seed}/mtm"] = fake_record("hopper-medium-expert-v5", seed, "mtm", score)
    block = bb.render(results)
    main_table, mixture = block.split("Beside the table")
    assert "hopper-medium-expert-v5" not in main_table.split("| dataset |")[1]  # not a row of the six's table
    assert "| hopper-medium-expert-v5 | 60.0 | 110.0 | – | – | 90.7 ± 19.7 (68.0 / 100.0 / 104.0) |" in mixture
    assert "of the sweep's 63 cells" in block  # 7 datasets x 3 models x 3 seeds


def test_an_interrupted_training_resumes_and_a_failed_start_is_overwritten(tmp_path, monkeypatch):
    monkeypatch.setattr(bb, "ROOT", tmp_path)
    args = args_of()
    (tmp_path / "run").mkdir()
    assert bb.train_command("iql", [Path("d.hdf5")], Path("run"), 0, args)[-1] == "--overwrite"
    (tmp_path / "run" / "checkpoints" / "last").mkdir(parents=True)
    assert [str(a) for a in bb.train_command("iql", [Path("d.hdf5")], Path("run"), 0, args)] == [
        bb.MTM, "train", "--resume", "run", "--set", "train.steps=100000", "--no-progress"]


def test_both_mtm_modes_evaluate_the_same_checkpoint_and_only_plan_gets_the_plan_options():
    args = args_of(plan_option=["--plan-horizon=2", "--plan-temperature=0.01"])
    rcbc = [str(a) for a in bb.eval_command(Path("ck"), "rcbc", Path("r.json"), args)]
    plan = [str(a) for a in bb.eval_command(Path("ck"), "plan", Path("p.json"), args)]
    assert rcbc[:4] == plan[:4] == [bb.MTM, "eval", "--checkpoint", "ck"]
    for cmd in (rcbc, plan):
        text = " ".join(cmd)
        assert "--episodes 20 --num-envs 10 --seed 100" in text and "--device cpu" in text and "--no-progress" in text
    assert plan[-2:] == ["--plan-horizon=2", "--plan-temperature=0.01"] and "--plan-horizon=2" not in rcbc
    assert bb.settings_of(args)["plan_options"] == ["--plan-horizon=2", "--plan-temperature=0.01"]


@pytest.mark.parametrize("argv,says", [
    (["--mtm-set", "train.steps=5"], "error: --mtm-set train.steps is set by the sweep itself; use --mtm-steps"),
    (["--mtm-set", "model.critic_updates=2"], "use --critic-updates"),
    (["--mtm-set", "model.nope=1"], "error: --mtm-set: --set: unknown key 'model.nope'"),
    (["--plan-option=--seed=3"], "error: --plan-option '--seed=3' is not an option of mode plan"),
    (["--plan-option=--plan-horizon"], "written --plan-X=VALUE"),
    (["--rows", "mtm,dt"], "error: unknown row(s) dt; choose from mlp-bc, iql, mtm"),
])
def test_options_the_sweep_cannot_run_with_are_one_error_line(argv, says, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_beyond.py", *argv, "--results", str(tmp_path / "r.json")])
    assert bb.main() == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and says in err
    assert not (tmp_path / "r.json").exists()


# ---- resuming and settings ----------------------------------------------------------------------


def fake_record(ds, seed, row, score, cpu_s=600.0, rate=1000.0, planner=None):
    modes = {mode: {"score": score + i, "env_steps_per_s": rate / (1 + 9 * (mode == "plan")), "precision": "fp32",
                    "plan_precision": "bf16" if mode == "plan" else None,
                    "planner": (planner or bb.expected_planner(args_of())) if mode == "plan" else None,
                    "action_history": False}
             for i, mode in enumerate(bb.ROWS[row].modes)}
    return {"dataset": ds, "seed": seed, "row": row, "modes": modes, "train_cpu_s": cpu_s, "cell_cpu_s": cpu_s + 60,
            "train_precision": "bf16", "cpu": "AVX512-BF16", "torch": "2.13.0+cpu", "threads": 1,
            "commands": {"train": f"OMP_NUM_THREADS=1 timeout --signal=INT --kill-after=600 99 mtm train --config {row}",
                         **{f"eval_{m}": f"mtm eval --mode {m}" for m in bb.ROWS[row].modes}}}


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    """main() on a stand-in dataset, with run_cell replaced by a recorder: (argv, calls, results)."""
    data_dir = tmp_path / "datasets"
    data_dir.mkdir()
    bench_common.write_hopper_like(data_dir / "hopper-medium-v5.hdf5", 3000)
    monkeypatch.setattr(bb, "DATA_DIR", data_dir)
    calls = []

    def run_cell(ds, seed, row, args, env, deadline):
        calls.append((ds, seed, row))
        if len(calls) == 4 and not getattr(run_cell, "survived", False):
            run_cell.survived = True
            raise KeyboardInterrupt  # the sweep is killed in its 4th cell
        return fake_record(ds, seed, row, 50.0 + seed)

    monkeypatch.setattr(bb, "run_cell", run_cell)
    results = tmp_path / "results.json"
    argv = ["bench_beyond.py", "--datasets", "hopper-medium-v5", "--seeds", "2", "--work", str(tmp_path / "w"),
            "--results", str(results), "--no-benchmarks"]
    return argv, calls, results


def test_a_killed_sweep_resumes_where_it_stopped_and_never_redoes_a_finished_cell(sweep, monkeypatch):
    argv, calls, results = sweep
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(KeyboardInterrupt):
        bb.main()
    saved = json.loads(results.read_text())
    assert len(saved["cells"]) == 3  # the 3 finished before the kill
    assert saved["settings"]["critic_updates"] == 8 and saved["settings"]["eval_seed"] == 100
    assert set(saved["datasets"]["hopper-medium-v5"]) >= {"normalized_mean", "normalized_best_episode"}
    calls.clear()
    assert bb.main() == 0
    order = list(bb.cell_order(["hopper-medium-v5"], range(2), list(bb.ROWS)))
    assert calls == order[3:]  # the killed cell again, then the rest; none of the finished ones
    assert len(json.loads(results.read_text())["cells"]) == len(order)
    calls.clear()
    assert bb.main() == 0
    assert calls == []  # everything finished: nothing runs


def test_a_sweep_with_other_settings_is_refused_naming_the_setting(sweep, monkeypatch, capsys):
    argv, calls, results = sweep
    results.write_text(json.dumps({"settings": bb.settings_of(args_of()), "cells": {}}))  # made with the defaults
    monkeypatch.setattr(sys, "argv", argv + ["--critic-updates", "4"])
    assert bb.main() == 1 and calls == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "critic_updates 8 there, 4 now" in err and "--results" in err
    calls.clear()
    monkeypatch.setattr(sys, "argv", argv + ["--critic-updates", "4", "--seeds", "1",
                                              "--results", str(results.parent / "other.json")])
    assert bb.main() == 0 and calls  # a results file of its own: it runs


def test_the_baselines_may_run_before_the_mtm_recipe_is_settled(sweep, monkeypatch, capsys):
    argv, calls, results = sweep
    baselines = argv + ["--rows", "mlp-bc,iql", "--seeds", "1", "--critic-updates", "4"]
    monkeypatch.setattr(sys, "argv", baselines)
    assert bb.main() == 0 and [row for _, _, row in calls] == ["mlp-bc", "iql"]
    saved = json.loads(results.read_text())["settings"]
    assert "iql_steps" in saved and "critic_updates" not in saved and "mtm_set" not in saved
    # The MTM rows come later with whatever recipe is chosen then, and that recipe is kept from then on.
    calls.clear()
    monkeypatch.setattr(sys, "argv", argv + ["--rows", "mtm", "--seeds", "1", "--critic-updates", "2"])
    assert bb.main() == 0 and [row for _, _, row in calls] == ["mtm"]
    assert json.loads(results.read_text())["settings"]["critic_updates"] == 2
    calls.clear()
    monkeypatch.setattr(sys, "argv", argv + ["--rows", "mtm", "--seeds", "2", "--critic-updates", "8"])
    assert bb.main() == 1 and calls == []
    assert "critic_updates 2 there, 8 now" in capsys.readouterr().err
    calls.clear()
    monkeypatch.setattr(sys, "argv", argv + ["--rows", "iql", "--seeds", "1", "--iql-steps", "5"])
    assert bb.main() == 1 and calls == []  # a baseline's own setting is kept too
    assert "iql_steps 100000 there, 5 now" in capsys.readouterr().err


def test_a_plan_evaluation_made_under_other_planner_defaults_is_run_again(sweep, monkeypatch):
    """The planner's defaults may change after a cell finished: its plan column is then out of date,
    and the cell runs again (run_cell redoes only the plan evaluation); RCBC-only rows never."""
    argv, calls, results = sweep
    monkeypatch.setattr(sys, "argv", argv + ["--seeds", "1"])
    assert bb.main() == 0 and len(calls) == 3
    saved = json.loads(results.read_text())
    old = {**bb.expected_planner(args_of()), "temperature": 0.5}
    saved["cells"]["hopper-medium-v5/seed0/mtm"] = fake_record("hopper-medium-v5", 0, "mtm", 40.0, planner=old)
    results.write_text(json.dumps(saved))
    calls.clear()
    assert bb.main() == 0 and calls == [("hopper-medium-v5", 0, "mtm")]
    assert json.loads(results.read_text())["cells"]["hopper-medium-v5/seed0/mtm"]["modes"]["plan"]["planner"] == \
        bb.expected_planner(args_of())
    calls.clear()
    assert bb.main() == 0 and calls == []


def test_the_expected_planner_is_the_policy_defaults_with_the_plan_options():
    from mtm.planning import DEFAULT_TEMPERATURE
    from mtm.policy_config import PolicyConfig

    default = bb.expected_planner(args_of())
    assert default == {"candidates": PolicyConfig().plan_candidates, "horizon": PolicyConfig().plan_horizon,
                       "noise": PolicyConfig().plan_noise, "temperature": DEFAULT_TEMPERATURE["q"],
                       "max_gain": PolicyConfig().plan_max_gain,
                       "relative_temperature": PolicyConfig().plan_relative_temperature}
    options = args_of(plan_option=["--plan-horizon=2", "--plan-temperature=0.3", "--plan-noise=0.1",
                                   "--plan-max-gain=0.5", "--plan-relative-temperature=2"])
    assert bb.expected_planner(options) == {**default, "horizon": 2, "temperature": 0.3, "noise": 0.1, "max_gain": 0.5,
                                            "relative_temperature": 2.0}
    # A report from before the planner had a gain cap (or a temperature floor) names none: its cell's
    # plan evaluation is redone.
    for key in ("max_gain", "relative_temperature"):
        assert not bb.planner_is_current({k: v for k, v in default.items() if k != key}, args_of())
    assert bb.planner_is_current({**default, "scored_by": "critic's Q", "precision": {}}, args_of())
    by_value = args_of(plan_option=["--plan-score=value"])  # its own default temperature, or every cell looks stale
    assert bb.expected_planner(by_value)["temperature"] == DEFAULT_TEMPERATURE["value"]
    assert not bb.planner_is_current({**default, "temperature": 0.5}, args_of()) and not bb.planner_is_current(None, args_of())


def trained_mtm_cell(tmp_path, monkeypatch) -> tuple:
    """A finished MTM training of hopper-medium-v5 seed 0 under tmp_path (the script's ROOT):
    (args, its run directory relative to ROOT)."""
    monkeypatch.setattr(bb, "ROOT", tmp_path)
    args = args_of(work=Path("w"))
    run_dir = Path("w") / "hopper-medium-v5" / "seed0" / "mtm"
    ckpt = tmp_path / bb.step_dir(run_dir, bb.row_steps("mtm", args))
    ckpt.mkdir(parents=True)
    (ckpt / "metadata.json").write_text("{}")
    return args, run_dir


def test_run_cell_redoes_only_an_out_of_date_plan_evaluation_and_keeps_the_old_report(tmp_path, monkeypatch):
    args, run_dir = trained_mtm_cell(tmp_path, monkeypatch)
    old = {**bb.expected_planner(args), "temperature": 0.5}
    (tmp_path / run_dir / "eval_rcbc.json").write_text(json.dumps({"normalized_score_mean": 30.0, "action_history": False}))
    (tmp_path / run_dir / "eval_plan.json").write_text(json.dumps({"normalized_score_mean": 20.0, "plan": old,
                                                                   "action_history": False}))
    ran = []

    def run(self, name, cmd):  # stands in for the evaluation: writes its report
        ran.append(name)
        report = Path(str(cmd[cmd.index("--output") + 1]))
        (tmp_path / report).write_text(json.dumps({"normalized_score_mean": 33.0, "plan": bb.expected_planner(args),
                                                   "action_history": False}))
        return True

    monkeypatch.setattr(bb.Commands, "run", run)
    record = bb.run_cell("hopper-medium-v5", 0, "mtm", args, {}, None)
    assert ran == ["eval_plan"]  # no training, no RCBC evaluation
    assert record["modes"]["plan"]["score"] == 33.0 and record["modes"]["rcbc"]["score"] == 30.0
    kept = json.loads((tmp_path / run_dir / "eval_plan.t0.5.json").read_text())
    assert kept["normalized_score_mean"] == 20.0
    ran.clear()
    bb.run_cell("hopper-medium-v5", 0, "mtm", args, {}, None)
    assert ran == []  # now current: nothing to redo
    # Out of date again at the same temperature (another candidate count): the first kept report stays.
    (tmp_path / run_dir / "eval_plan.json").write_text(json.dumps({"plan": {**old, "candidates": 3}, "action_history": False}))
    bb.run_cell("hopper-medium-v5", 0, "mtm", args, {}, None)
    assert ran == ["eval_plan"] and (tmp_path / run_dir / "eval_plan.t0.5.1.json").exists()
    assert json.loads((tmp_path / run_dir / "eval_plan.t0.5.json").read_text())["normalized_score_mean"] == 20.0


def test_evaluations_made_with_the_action_history_shown_are_out_of_date_and_kept_beside(tmp_path, monkeypatch):
    """Until 2026-12-07 the policy showed the model its past actions by default; the sweep's MTM
    evaluations from then (their reports say action_history true, their records say nothing) run again
    under today's default, without the history, and the old reports are kept."""
    assert bb.PolicyConfig().action_history is False
    args = args_of()
    current = fake_record("hopper-medium-v5", 0, "mtm", 40.0)
    assert not bb.record_is_stale(current, args)
    before = json.loads(json.dumps(current))
    for mode in before["modes"].values():
        del mode["action_history"]
    assert bb.record_is_stale(before, args)
    assert not bb.record_is_stale({**before, "row": "iql"}, args)  # the MLPs have no history to show
    assert bb.out_of_date("rcbc", {"action_history": True}, args) == "eval_rcbc.history"
    assert bb.out_of_date("plan", {"action_history": True, "plan": bb.expected_planner(args)}, args) == "eval_plan.history"

    args, run_dir = trained_mtm_cell(tmp_path, monkeypatch)
    for mode, score in (("rcbc", 30.0), ("plan", 20.0)):
        (tmp_path / run_dir / f"eval_{mode}.json").write_text(json.dumps(
            {"normalized_score_mean": score, "plan": bb.expected_planner(args) if mode == "plan" else None,
             "action_history": True}))
    ran = []

    def run(self, name, cmd):
        ran.append(name)
        assert "--action-history" not in cmd and "--no-action-history" not in cmd  # the default's
        report = Path(str(cmd[cmd.index("--output") + 1]))
        (tmp_path / report).write_text(json.dumps({"normalized_score_mean": 35.0, "action_history": False,
                                                   "plan": bb.expected_planner(args) if "plan" in name else None}))
        return True

    monkeypatch.setattr(bb.Commands, "run", run)
    record = bb.run_cell("hopper-medium-v5", 0, "mtm", args, {}, None)
    assert ran == ["eval_rcbc", "eval_plan"]  # both evaluations again, no training
    assert record["modes"]["rcbc"]["score"] == 35.0 and record["modes"]["rcbc"]["action_history"] is False
    assert not bb.record_is_stale(record, args)
    for mode, score in (("rcbc", 30.0), ("plan", 20.0)):
        assert json.loads((tmp_path / run_dir / f"eval_{mode}.history.json").read_text())["normalized_score_mean"] == score


def test_no_cell_starts_after_the_deadline(sweep, monkeypatch):
    import datetime

    argv, calls, _ = sweep
    monkeypatch.setattr(sys, "argv", argv + ["--stop-at", "12:00"])
    monkeypatch.setattr(bb, "parse_stop_at", lambda text, start: start - datetime.timedelta(seconds=1))
    assert bb.main() == 0 and calls == []


# ---- the tables ---------------------------------------------------------------------------------


def partial_results() -> dict:
    cells = {}
    for seed, score in enumerate([40.0, 50.0, 60.0]):  # hopper-medium-replay: three seeds of every row
        for row in bb.ROWS:
            cells[bb.cell_key("hopper-medium-replay-v5", seed, row)] = fake_record(
                "hopper-medium-replay-v5", seed, row, score, cpu_s=60.0 * (seed + 1))
    for seed in (0, 1):  # halfcheetah-medium-replay: two seeds of MTM, one of MLP-BC
        cells[bb.cell_key("halfcheetah-medium-replay-v5", seed, "mtm")] = fake_record(
            "halfcheetah-medium-replay-v5", seed, "mtm", 45.0 + 2 * seed)
    cells[bb.cell_key("halfcheetah-medium-replay-v5", 0, "mlp-bc")] = fake_record(
        "halfcheetah-medium-replay-v5", 0, "mlp-bc", 24.0)
    settings = bb.settings_of(args_of(plan_option=["--plan-horizon=2"]))
    return {"settings": settings, "cells": cells,
            "datasets": {"hopper-medium-replay-v5": {"normalized_mean": 15.62, "normalized_best_episode": 43.14}}}


def test_the_table_has_the_issues_columns_mean_and_std_over_seeds_n_and_dashes():
    block = bb.render(partial_results())
    assert block.startswith(bb.BEGIN) and block.endswith(bb.END)
    assert "| dataset | data mean | best episode | MLP-BC | IQL | MTM (RCBC) | MTM (plan) |" in block
    # three seeds: mean ± sample std (10), no n; MTM's plan column is the second mode (score + 1)
    assert "| hopper-medium-replay-v5 | 15.6 | 43.1 | 50.0 ± 10.0 | 50.0 ± 10.0 | 50.0 ± 10.0 | 51.0 ± 10.0 |" in block
    # fewer seeds say their n; none is a dash, as is a dataset the results know nothing of
    assert "| halfcheetah-medium-replay-v5 | – | – | 24.0 (n=1) | – | 46.0 ± 1.4 (n=2) | 47.0 ± 1.4 (n=2) |" in block
    assert "| halfcheetah-expert-v5 | – | – | – | – | – | – |" in block
    rows = [line.split(" | ")[0][2:] for line in block.splitlines() if line.startswith("| ") and "data mean" not in line
            and "---" not in line and "MLP-BC |" not in line]
    assert rows[:6] == bb.DATASETS
    assert "Partial: 12 of the sweep's 54 cells" in block  # 6 datasets x 3 models x 3 seeds
    assert "`python scripts/bench_beyond.py --stop-at HH:MM`" in block  # how to resume


def test_training_minutes_are_the_steps_own_cpu_time_over_every_resume():
    # The command log misses attempts it did not see (a resume by hand, an older script, a run adopted
    # from an identical training elsewhere): the run's own cumulative step time is what the column shows.
    results = partial_results()
    for seed in (0, 1, 2):
        rec = results["cells"][bb.cell_key("hopper-medium-replay-v5", seed, "iql")]
        rec["train_steps_cpu_s"] = 1200.0 + 60.0 * seed  # the commands logged only 60-180 s of it
    rec = results["cells"][bb.cell_key("hopper-medium-replay-v5", 0, "mtm")]
    rec["train_cpu_s"] = None  # adopted: no train command ran in the sweep
    rec["train_steps_cpu_s"] = 300.0
    block = bb.render(results)
    # IQL: (20 + 21 + 22) / 3; MTM: (5 + 2 + 3) / 3 -- seeds 1, 2 without steps time fall back to the log
    assert "| hopper-medium-replay-v5 | 2.0 | 21.0 | 3.3 | 1,000 / 100 |" in block
    assert "the training steps' own CPU time, cumulative over resumes" in block
    assert bb.training_cpu_minutes({"train_cpu_s": None}) is None


def test_the_cost_table_names_the_cpu_path_precisions_and_the_sweeps_command():
    block = bb.render(partial_results())
    assert "| dataset | MLP-BC | IQL | MTM | RCBC / plan env steps/s |" in block
    # train CPU-minutes over seeds 1, 2, 3; steps/s 1000 in rcbc, 100 in plan
    assert "| hopper-medium-replay-v5 | 2.0 | 2.0 | 2.0 | 1,000 / 100 |" in block
    assert "| halfcheetah-medium-replay-v5 | 10.0 | – | 10.0 | 1,000 / 100 |" in block
    assert "CPU path AVX512-BF16 (torch 2.13.0+cpu, threads 1 a command)" in block
    assert "training MLP-BC bf16, IQL bf16, MTM bf16" in block and "the planner's candidates bf16" in block
    line = next(x for x in block.splitlines() if x.startswith("- **command**"))
    assert line == "- **command**: `python scripts/bench_beyond.py --plan-option=--plan-horizon=2`"
    # the recorded commands of a cell, in the order they ran, without the deadline's wrapper
    assert "    OMP_NUM_THREADS=1 mtm train --config mtm\n    mtm eval --mode rcbc\n    mtm eval --mode plan" in block


def test_table_only_adds_the_section_once_then_replaces_its_block(tmp_path, monkeypatch):
    results = tmp_path / "r.json"
    results.write_text(json.dumps(partial_results()))
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## Beyond the data: planning through the model's masks (pilot)\n\ntext\n")
    monkeypatch.setattr(bb, "BENCHMARKS", bench)
    monkeypatch.setattr(bb, "DATA_DIR", tmp_path / "absent")  # no data: the behaviour columns stay as recorded
    monkeypatch.setattr(sys, "argv", ["bench_beyond.py", "--table-only", "--results", str(results)])
    assert bb.main() == 0
    text = bench.read_text()
    assert text.startswith("# Benchmarks\n\n## Beyond the data: planning through the model's masks (pilot)\n\ntext\n\n")
    assert "\n## Beyond the data (issue #23)\n\n" + bb.BEGIN in text and text.endswith(bb.END + "\n")
    assert "| hopper-medium-replay-v5 | 15.6 | 43.1 | 50.0 ± 10.0 |" in text
    assert bb.main() == 0
    again = bench.read_text()
    assert again == text and again.count(bb.BEGIN) == 1 and again.count("## Beyond the data (issue #23)") == 1


def test_dry_run_prints_one_training_per_row_and_two_evaluations_for_mtm_and_writes_nothing(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--seeds", "1", "--datasets", "hopper-medium-v5",
                          "--plan-option=--plan-horizon=2", "--work", str(tmp_path / "w"),
                          "--results", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    if "is absent" in out.stdout:
        pytest.skip("../shared/datasets is not present")
    lines = [line for line in out.stdout.splitlines() if line.startswith("$ ")]
    assert [re.search(r"mtm (train|eval) ", line).group(1) for line in lines] == [
        "train", "eval", "train", "eval", "train", "eval", "eval"]
    assert [line.split("--mode ")[1].split()[0] for line in lines if "--mode" in line] == ["bc", "bc", "rcbc", "plan"]
    assert lines[-1].endswith("--plan-horizon=2") and "--plan-horizon" not in lines[-2]
    assert not (tmp_path / "w").exists() and not (tmp_path / "r.json").exists()


# ---- one tiny real sweep ------------------------------------------------------------------------


def test_tiny_sweep_end_to_end_records_every_mode_and_resumes_to_nothing(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "datasets"
    data_dir.mkdir()
    bench_common.write_hopper_like(data_dir / "hopper-medium-v5.hdf5", 3000)  # Hopper-v5's shapes, random values
    monkeypatch.setattr(bb, "DATA_DIR", data_dir)
    results = tmp_path / "r.json"
    argv = ["bench_beyond.py", "--datasets", "hopper-medium-v5", "--seeds", "1", "--mlp-steps", "10", "--iql-steps", "10",
            "--mtm-steps", "10", "--episodes", "2", "--plan-option=--plan-candidates=4", "--work", str(tmp_path / "w"),
            "--results", str(results), "--no-benchmarks"]
    monkeypatch.setattr(sys, "argv", argv)
    assert bb.main() == 0
    cells = json.loads(results.read_text())["cells"]
    assert sorted(cells) == [bb.cell_key("hopper-medium-v5", 0, row) for row in ("iql", "mlp-bc", "mtm")]
    for row, rec in ((r["row"], r) for r in cells.values()):
        assert sorted(rec["modes"]) == sorted(bb.ROWS[row].modes)
        for mode in rec["modes"].values():
            assert isinstance(mode["score"], float) and mode["env_steps_per_s"] > 0 and mode["precision"] in ("fp32", "bf16")
        assert rec["train_cpu_s"] > 0 and rec["train_attempts"] == 1 and rec["steps"] == 10 and rec["cpu"]
        assert rec["train_precision"] in ("fp32", "bf16") and rec["threads"] == 1
    mtm = cells[bb.cell_key("hopper-medium-v5", 0, "mtm")]
    assert "model.critic=true" in mtm["commands"]["train"] and "model.critic_updates=8" in mtm["commands"]["train"]
    assert mtm["commands"]["eval_plan"].endswith("--plan-candidates=4") and mtm["modes"]["plan"]["planner"]["candidates"] == 4
    assert "(n=1)" in capsys.readouterr().out
    monkeypatch.setattr(bench_common, "run_command", lambda *a, **k: pytest.fail("a finished cell ran again"))
    assert bb.main() == 0
    assert "0 cells to run" in capsys.readouterr().out
