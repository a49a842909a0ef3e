"""scripts/bench_quality.py's tables: final scores and time-to-quality from learning-curve records."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_quality.py"
if str(SCRIPT.parent) not in sys.path:
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports bench_common, as when run from scripts/
spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
bq = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bq)


def record(method: str, seed: int, curve: dict[int, tuple[float, float]]) -> dict:
    """A run whose checkpoint at `step` has (train CPU seconds, score) in each of its modes."""
    points = {str(step): {"train_cpu_s": cpu, "val_bc_mse": None,
                          **{mode: {"score": score, "score_std": 1.0, "return": score * 10, "return_std": 5.0,
                                    "length": 1000, "target": None, "episodes": 20, "eval_wall_s": 1.0}
                             for mode in bq.EVAL_MODES[method]}}
              for step, (cpu, score) in curve.items()}
    return {"dataset": "hopper-expert-v5", "method": method, "seed": seed, "config": bq.METHODS[method],
            "threads": 1, "train": {"started": "2026-11-29T08:00:00+00:00", "cpu_s": 1.0}, "points": points}


def results() -> dict:
    runs = {
        # MTM reaches 90 (mean over seeds) at step 2000, after 120 CPU-s on average.
        "t/hopper-expert-v5/mtm/seed0": record("mtm", 0, {1000: (60, 50.0), 2000: (120, 95.0), 3000: (180, 100.0)}),
        "t/hopper-expert-v5/mtm/seed1": record("mtm", 1, {1000: (60, 70.0), 2000: (120, 85.0), 3000: (180, 98.0)}),
        # MLP-BC plateaus at 80: it never reaches 90 % of MTM's best final 99.
        "t/hopper-expert-v5/mlp-bc/seed0": record("mlp-bc", 0, {1000: (6, 80.0), 2000: (12, 80.0)}),
        "other/hopper-expert-v5/mtm/seed0": record("mtm", 0, {3000: (1, 0.0)}),  # another tag: ignored
    }
    return {"datasets": {"hopper-expert-v5": {"normalized_mean": 90.5, "normalized_best_episode": 110.1}},
            "runs": runs}


def test_time_to_quality_is_the_first_checkpoint_whose_seed_mean_reaches_the_target():
    cur = bq.curves(results(), "t")
    assert cur[("hopper-expert-v5", "mtm", "rcbc")][2000] == ([95.0, 85.0], [120, 120])
    assert bq.time_to_quality(cur[("hopper-expert-v5", "mtm", "rcbc")], 0.9 * 99.0) == "2.0 (step 2000)"
    assert bq.time_to_quality(cur[("hopper-expert-v5", "mlp-bc", "bc")], 0.9 * 99.0) == "not reached"


def test_the_block_reports_final_checkpoints_of_one_tag_only():
    block = bq.render(results(), "t", ["hopper-expert-v5"])
    assert block.startswith("<!-- quality:t:begin -->") and block.endswith("<!-- quality:t:end -->")
    assert "| hopper-expert-v5 | 90.5 | 110.1 | 99.0 ± 1.4 | 99.0 ± 1.4 | 80.0 (1 seed) | – |" in block
    assert "| hopper-expert-v5 | 89.1 | 2.0 (step 2000) | 2.0 (step 2000) | not reached | – |" in block
