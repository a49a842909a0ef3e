"""The rollout scripts users copy: they run against a real checkpoint and say what they did."""

import subprocess
import sys
from pathlib import Path

from mtm.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_rollout_and_render_scripts(tmp_path, reacher_run):
    out = subprocess.run([sys.executable, str(REPO / "scripts/rollout.py"), str(reacher_run), "--episodes", "2"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("return") == 2
    video = tmp_path / "r.mp4"
    out = subprocess.run([sys.executable, str(REPO / "scripts/render_rollout.py"), str(reacher_run), str(video),
                          "--size", "64"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "51 frames" in out.stdout and video.stat().st_size > 1000
    assert load_checkpoint(reacher_run).metadata["env_id"] == "Reacher-v5"
