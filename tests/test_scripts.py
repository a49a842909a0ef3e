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


def test_bench_plan_reports_each_setting(reacher_run, tmp_path):
    out_json = tmp_path / "plan.json"
    out = subprocess.run([sys.executable, "bench_plan.py", str(reacher_run), "--episodes", "2", "--num-envs", "2",
                          '{"mode": "rcbc"}', '{"mode": "plan", "plan_candidates": 4}', "--json", str(out_json)],
                         cwd=REPO / "scripts", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rcbc, plan = json.loads(out_json.read_text())["results"]
    assert rcbc["setting"] == {"mode": "rcbc"} and rcbc["plan"] is None
    assert plan["plan"]["candidates"] == 4 and plan["env_steps_per_s"] > 0
    assert '| {"mode": "plan", "plan_candidates": 4} |' in out.stdout
    # The planner's score spread, medians over steps: candidate 0 is the RCBC action, so the best
    # is never below it; the top softmax weight lies between uniform (1/K) and one candidate (1).
    assert rcbc["score_spread"] is None
    spread = plan["score_spread"]
    assert spread["best_minus_rcbc"] >= 0 and spread["spread"] >= 0 and 0.25 <= spread["top_weight"] <= 1


def test_bench_plan_critic_from_a_checkpoint_without_one_is_one_error_line(reacher_run):
    out = subprocess.run([sys.executable, "bench_plan.py", str(reacher_run), "--critic-from", str(reacher_run),
                          '{"mode": "plan"}'], cwd=REPO / "scripts", capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1] == f"error: {reacher_run} has no critic"


def test_bench_predict_compares_the_precisions_by_batch(tmp_path):
    out_json = tmp_path / "predict.json"
    out = subprocess.run([sys.executable, "bench_predict.py", "--configs", "small", "--windows", "1,4",
                          "--rounds", "1", "--warmup", "0", "--json", str(out_json)],
                         cwd=REPO / "scripts", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    results = json.loads(out_json.read_text())["results"]
    assert [(r["windows"], r["dtype"]) for r in results] == [(1, "fp32"), (1, "bf16"), (4, "fp32"), (4, "bf16")]
    one, four = results[0], results[2]
    assert four["flops"] == 4 * one["flops"] > 0  # every window costs the same
    assert "| small  |       4 | bf16  |" in out.stdout


def test_critic_along_episode_prints_q_beside_the_episodes_own_bootstrapped_return(reacher_run, tmp_path):
    """scripts/critic_along_episode.py on a tiny Reacher MTM with a critic: one 50-step episode (a
    time-out, so its return is bootstrapped with V of the last state), Q and V at every step, and in
    mode plan the best candidate's margin over the RCBC action."""
    import importlib.util

    import numpy as np
    import torch

    from mtm.config import RunConfig, load_config
    from mtm.policy import MTMPolicy
    from mtm.training.loop import train
    from test_critic import TINY_MTM
    from conftest import TINY_REACHER

    run = tmp_path / "critic"
    train(load_config(RunConfig, None, TINY_REACHER + TINY_MTM + [f"data.path={reacher_run.parent / 'reacher.hdf5'}",
                                                                   f"train.run_dir={run}", "train.steps=30"]),
          progress=False, say=None)
    out = subprocess.run([sys.executable, "critic_along_episode.py", str(run), "--mode", "plan", "--seeds", "0",
                          "--every", "20"], cwd=REPO / "scripts", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "reset seed 0, mode plan: 50 steps" in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.strip()[:1].isdigit() and line.count("|") == 3]
    assert [int(r.split("|")[0]) for r in rows] == [0, 20] + list(range(40, 50))
    assert "above the RCBC action (median)" in out.stdout.splitlines()[-1]

    spec = importlib.util.spec_from_file_location("critic_along_episode", REPO / "scripts" / "critic_along_episode.py")
    script = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        spec.loader.exec_module(script)
    finally:
        sys.path.remove(str(REPO / "scripts"))
    policy = MTMPolicy.from_checkpoint(str(run), mode="rcbc")
    ep = script.run_episode(policy, 0)
    model = policy.model
    g, r = ep["g"], ep["reward"] * float(model.reward_scale)
    gamma = float(model.critic.discount)
    assert len(g) == 50 and len(ep["best"]) == 0  # rcbc: no planner, no margins
    np.testing.assert_allclose(g[:-1], r[:-1] + gamma * g[1:], rtol=1e-9)
    # The last step timed out: what follows it is V of the state it reached, not 0.
    assert g[-1] != r[-1]
    state = torch.as_tensor(policy.make_env().reset(seed=0)[0], dtype=torch.float32)[None]
    assert ep["v"][0] == float(model.state_value(state))


def test_pixel_action_gain_is_the_slope_of_the_policys_action_on_the_experts_per_phase():
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("pixel_action_gain", REPO / "scripts" / "pixel_action_gain.py")
    gain = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gain)
    assert gain.phases_of(50) == [(0, 5), (5, 15), (15, 50)] and gain.phases_of(100) == [(0, 10), (10, 30), (30, 100)]
    rng = np.random.default_rng(0)
    steps = np.tile(np.arange(50), 4)
    expert = rng.normal(size=(200, 2))
    policy = np.where((steps >= 15)[:, None], 0.5 * expert, expert)  # half as strong while holding
    rows = gain.gain_table(policy, expert, steps, gain.phases_of(50))
    assert [r["steps"] for r in rows] == ["0-4", "5-14", "15-49"]
    assert abs(rows[0]["slope"] - 1.0) < 1e-9 and rows[0]["mse"] < 1e-12
    assert abs(rows[2]["slope"] - 0.5) < 1e-9
    held = steps >= 15
    assert abs(rows[2]["mse"] - ((0.5 * expert[held]) ** 2).mean()) < 1e-12
    assert abs(rows[2]["expert_abs"] - np.abs(expert[held]).mean()) < 1e-12


def test_compare_evals_pairs_episodes_by_seed_and_counts_falls(tmp_path):
    def report(name, scores, ended, first_seed=100):
        episodes = [{"index": i, "seed": first_seed + i, "return": 10 * s, "length": 1000, "terminated": e,
                     "normalized_score": s} for i, (s, e) in enumerate(zip(scores, ended))]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"per_episode": episodes}))
        return str(path)

    a = report("a", [10.0, 20.0, 30.0], [False, True, False])
    b = report("b", [12.0, 20.0, 40.0], [True, True, False])  # differences 2, 0, 10: mean 4, se 3.055
    script = [sys.executable, str(REPO / "scripts" / "compare_evals.py")]
    out = subprocess.run([*script, "--labels", "rcbc,plan", a, b, a, b], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, pooled = out.stdout.splitlines()[0], out.stdout.splitlines()[-1]
    assert "rcbc 20.0, plan 24.0, plan - rcbc +4.00 ± 3.06 (standard error, 3 paired episodes); ended early 1 / 2" in first
    # Pooled: the six differences 2, 0, 10, 2, 0, 10: sample variance 22.4, se = sqrt(22.4 / 6).
    assert pooled.startswith("pooled: rcbc 20.0, plan 24.0, plan - rcbc +4.00 ± 1.93") and pooled.endswith("2 / 4")

    odd = subprocess.run([*script, a], capture_output=True, text=True, timeout=60)
    assert odd.returncode == 2 and odd.stderr.strip() == "error: give the reports in pairs (A then B), got 1"
    elsewhere = report("c", [1.0], [False], first_seed=500)
    disjoint = subprocess.run([*script, a, elsewhere], capture_output=True, text=True, timeout=60)
    assert disjoint.returncode == 2 and "share no episode seed" in disjoint.stderr
