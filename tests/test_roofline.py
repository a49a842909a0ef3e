"""scripts/roofline.py and bench_train.py's roofline: FLOPs counted from real shapes, a measured roof."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from roofline import Matmul, format_profile, measure_roof, profile_steps, record_step  # noqa: E402


def test_linear_forward_and_backward_flops_are_exact():
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(8, 4, requires_grad=True)

    def step():
        layer(x).sum().backward()

    rec = record_step(step)
    # forward addmm (8x4 @ 4x3), backward grad_x (8x3 @ 3x4) and grad_W (3x8 @ 8x4): 2*8*4*3 each
    assert rec.matmul_flops == 3 * 2 * 8 * 4 * 3
    assert sum(rec.matmuls.values()) == 3
    assert all(mm.dtype == torch.float32 for mm in rec.matmuls)


def test_bf16_autocast_matmuls_are_recorded_as_bf16():
    layer = torch.nn.Linear(16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rec = record_step(lambda: layer(torch.randn(4, 16)))
    assert {mm.dtype for mm in rec.matmuls} == {torch.bfloat16}


def test_roof_fraction_of_a_pure_matmul_step_is_about_one():
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    rec = record_step(lambda: a @ b)
    roof = measure_roof(rec, torch.device("cpu"))
    assert roof.flops == Matmul(1, 256, 256, 256, torch.float32).flops
    assert roof.roof_flops_per_s > 0
    assert abs(roof.fraction(roof.ideal_s) - 1.0) < 1e-9
    assert roof.fraction(2 * roof.ideal_s) == 0.5 * roof.fraction(roof.ideal_s)


def test_profile_attributes_time_to_ops():
    a = torch.randn(64, 64)
    timer, wall = profile_steps(lambda: (a @ a).relu_(), steps=3)
    assert timer.calls["mm"] == 3 and timer.calls["relu_"] == 3
    lines = format_profile(timer, wall, steps=3)
    assert lines[0].split()[:2] == ["op", "ms/step"] and any(line.startswith("mm ") for line in lines)
    assert lines[-1].startswith("(outside ops")


def test_bench_train_reports_the_roof_fraction(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "scripts/bench_train.py", "--configs", "small", "--batch-size", "16", "--dtypes", "fp32",
         "--threads", "1", "--steps", "1", "--warmup", "0", "--data", "synthetic", "--profile", "1",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "of roof" in run.stdout and "where the time goes: small" in run.stdout
    result = json.loads(out.read_text())["results"][0]
    # small config, L = 4: ~0.2 GFLOP per sample forward + backward (width 128, 12 tokens)
    assert 5e6 < result["model_flops_per_sample"] < 5e8
    # The fraction is the model's FLOP rate over the measured roof; both are timings, so on a shared
    # machine only their relation is asserted, not a range (speed belongs in the benchmarks).
    achieved = result["model_flops_per_sample"] * result["samples_per_s"]
    assert result["roof_flops_per_s"] > 0 and result["roof_fraction"] > 0
    assert result["roof_fraction"] == pytest.approx(achieved / result["roof_flops_per_s"], rel=1e-6)
