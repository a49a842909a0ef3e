"""The scripts users copy or run: they work against a real checkpoint and say what they did
(`mtm eval --video --contact-sheet` renders episodes: tests/test_policy_eval.py)."""

import json
import subprocess
import sys
from pathlib import Path

from mtm.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_rollout_script(reacher_run):
    out = subprocess.run([sys.executable, str(REPO / "scripts/rollout.py"), str(reacher_run), "--episodes", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("return") == 2
    assert load_checkpoint(reacher_run).metadata["env_id"] == "Reacher-v5"


def test_bench_inference_counts_work_that_grows_with_the_envs(tmp_path):
    out_json = tmp_path / "inference.json"
    out = subprocess.run([sys.executable, "bench_inference.py", "--envs", "Reacher-v5", "--num-envs", "1,2",
                          "--rounds", "1", "--calls", "2", "--no-compile", "--json", str(out_json)],
                         cwd=REPO / "scripts", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    one, two = json.loads(out_json.read_text())["results"]
    # Every Linear runs on rows that belong to one env: twice the envs, exactly twice the work.
    assert one["predict_macs"] > 1e6 and two["predict_macs"] == 2 * one["predict_macs"]
    assert 0 < one["eval_over_raw_estimate"] < 1 and one["bf16_max_action_deviation"] < 1e-2
    assert "| Reacher-v5 | 2 |" in out.stdout
