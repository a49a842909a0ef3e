"""scripts/bench_pixels.py, the "Pixel tasks" sweep (issue #25): its cell order, the commands of each
row and task, the expert's column normalised by the policies' references, and the tables built from
a partial results file."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_pixels.py"
if str(SCRIPT.parent) not in sys.path:
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports bench_common and sweep_cells, as when run from scripts/
spec = importlib.util.spec_from_file_location("bench_pixels", SCRIPT)
bp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bp)


def args_of(**changes) -> SimpleNamespace:
    return SimpleNamespace(**{**vars(bp.build_parser().parse_args([])), **changes})


def test_the_experts_come_first_then_a_whole_seed_at_a_time():
    order = list(bp.cell_order(["A", "B"], range(2), ["mtm", "cnn-bc"]))
    assert order[:2] == [("A", None, "expert"), ("B", None, "expert")]
    assert order[2:6] == [("A", 0, "mtm"), ("A", 0, "cnn-bc"), ("B", 0, "mtm"), ("B", 0, "cnn-bc")]
    assert {seed for _, seed, _ in order[6:]} == {1} and len(order) == 2 + 2 * 2 * 2
    assert bp.cell_key("A", None, "expert") == "A/expert" and bp.cell_key("A", 1, "mtm") == "A/seed1/mtm"


def test_each_row_trains_its_config_and_pusher_gets_its_return_horizon(tmp_path):
    args = args_of()
    cmd = {(task, row): " ".join(map(str, bp.train_command(task, row, tmp_path / task / row, 1, args)))
           for task in bp.TASKS for row in bp.ROWS}
    for task in bp.TASKS:
        assert "--config cnn-bc " in cmd[task, "cnn-bc"] and "--config pixels " in cmd[task, "mtm"]
        assert "--set tokens.image_keys=[] " in cmd[task, "mtm-noimg"] and "image_keys" not in cmd[task, "mtm"]
        for row in bp.ROWS:  # each config's own steps: cnn-bc's batch of 128 takes twice pixels' 4000
            steps = {"cnn-bc": 8000, "mtm-noimg": 4000, "mtm": 4000}[row]
            assert "train.seed=1 " in cmd[task, row] and f"train.steps={steps} " in cmd[task, row]
            assert f"--data {bp.TASKS[task].data} " in cmd[task, row]
    assert all("data.rtg_horizon=100" in cmd["PusherPixels", row] for row in bp.ROWS)
    assert not any("rtg_horizon" in cmd["ReacherPixels", row] for row in bp.ROWS)
    short = " ".join(map(str, bp.train_command("ReacherPixels", "mtm", tmp_path / "r", 0, args_of(steps=20))))
    assert "train.steps=20 " in short


def test_evaluations_are_held_out_resets_in_mode_bc(tmp_path):
    cmd = [str(a) for a in bp.eval_command(Path("ck"), tmp_path / "eval.json", args_of())]
    assert cmd[cmd.index("--seed") + 1] == "5000" and cmd[cmd.index("--episodes") + 1] == "50"
    assert cmd[cmd.index("--mode") + 1] == "bc" and cmd[cmd.index("--output") + 1] == str(tmp_path / "eval.json")


def record(task, seed, row, score, success=None, cpu_s=600.0):
    return {"task": task, "seed": seed, "row": row, "score": score, "success_rate": success, "train_cpu_s": cpu_s,
            "references": {"min": 0.0, "max": 10.0}, "cpu": "AVX512-BF16", "threads": 1, "train_precision": "bf16",
            "commands": {"train": f"mtm train --config {row}", "eval": "mtm eval"}}


def test_the_table_has_the_issues_columns_the_experts_score_and_a_partial_note():
    results = {"settings": {"episodes": 50}, "cells": {
        "PusherPixels/expert": {"task": "PusherPixels", "row": "expert", "seed": None, "returns": [9.0, 10.0],
                                "commands": {"collect": "mtm collect --policy expert"}},
        "PusherPixels/seed0/mtm": record("PusherPixels", 0, "mtm", 80.0, 0.8),
        "PusherPixels/seed1/mtm": record("PusherPixels", 1, "mtm", 90.0, 0.9, 900.0),
        "PusherPixels/seed0/cnn-bc": record("PusherPixels", 0, "cnn-bc", 97.0, 0.92)}}
    text = bp.render(results)
    assert "| task | expert | CNN-BC | MTM (no images) | MTM |" in text
    pusher = next(line for line in text.splitlines() if line.startswith("| PusherPixels | 95.0 |"))
    assert pusher == "| PusherPixels | 95.0 | 97.0 (n=1) | – | 85.0 ± 7.1 (n=2) |"  # expert: (9 + 10) / 2 of 0..10
    assert "| ReacherPixels | – | – | – | – |" in text
    assert "**Partial: 3 of the sweep's 18 model cells have finished**" in text
    success = next(line for line in text.splitlines() if line.startswith("| PusherPixels | 92 %"))
    assert success == "| PusherPixels | 92 % | 10.0 | – | – | 85 % | 12.5 |"
    assert text.index("mtm collect --policy expert") < text.index("mtm train --config cnn-bc") < text.index("mtm train --config mtm")
    assert text.startswith(bp.BEGIN) and text.endswith(bp.END)
    # the run's own step time, over every resume, where recorded (the command log misses killed attempts)
    results["cells"]["PusherPixels/seed1/mtm"]["train_steps_cpu_s"] = 1200.0
    success = next(line for line in bp.render(results).splitlines() if line.startswith("| PusherPixels | 92 %"))
    assert success == "| PusherPixels | 92 % | 10.0 | – | – | 85 % | 15.0 |"


def test_adopted_cells_are_named_and_the_commands_come_from_a_cell_the_sweep_ran():
    adopted = {**record("ReacherPixels", 0, "mtm", 95.0), "commands": {}}  # copied in: no command log
    results = {"settings": {"episodes": 50}, "cells": {
        "ReacherPixels/seed0/mtm": adopted,
        "PusherPixels/seed0/mtm": {**record("PusherPixels", 0, "mtm", 85.0),
                                   "commands": {"train": "mtm train --config pixels --data pusher"}}}}
    text = bp.render(results)
    assert "- **adopted cells** (ReacherPixels/seed0/mtm): trained and evaluated by these same commands" in text
    assert "    mtm train --config pixels --data pusher" in text.splitlines()
    assert "| ReacherPixels | – | – | – | 95.0 (n=1) |" in text  # an adopted cell still counts
    del results["cells"]["PusherPixels/seed0/mtm"]
    text = bp.render(results)
    assert "Each cell's commands" not in text  # none recorded: no empty list
    results["cells"]["ReacherPixels/seed0/mtm"]["commands"] = {"train": "mtm train"}
    assert "adopted cells" not in bp.render(results)


def test_an_unknown_task_or_row_is_one_error_line():
    out = subprocess.run([sys.executable, str(SCRIPT), "--tasks", "Pong", "--rows", "mtm,gpt", "--dry-run"],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip() == ("error: unknown task Pong, row gpt; tasks: ReacherPixels, PusherPixels; "
                                  "rows: cnn-bc, mtm-noimg, mtm")


@pytest.mark.parametrize("task", list(bp.TASKS))
def test_each_tasks_recipe_is_the_one_datasets_readme_gives(task):
    spec = bp.TASKS[task]
    readme = (SCRIPT.parents[1] / "datasets" / "README.md").read_text()
    assert f"mtm collect --env {spec.env} --policy expert {' '.join(spec.collect)} --output {spec.data}" in readme
