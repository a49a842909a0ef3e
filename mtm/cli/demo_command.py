"""`mtm demo`: the whole pipeline on the built-in task, in minutes on a CPU."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from mtm.cli.group import at_least, main


@main.command("demo")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a field of configs/demo.yaml.")
@click.option("--episodes", default=50, show_default=True, callback=at_least(1), help="Evaluation episodes.")
@click.option("--progress/--no-progress", default=True)
def demo_command(overrides, episodes, progress) -> None:
    """Collect the default Reacher dataset, train a small MTM, evaluate it, print the score."""
    import torch

    from mtm.demo import run_demo
    from mtm.evaluation import format_report
    from mtm.io import atomic_write_text

    if not torch.cuda.is_available() and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(min(2, torch.get_num_threads()))
    result = run_demo(Path("."), overrides=tuple(overrides), episodes=episodes,
                      say=lambda text: click.echo(f"[demo] {text}"), progress=progress)
    report = result.report
    atomic_write_text(result.run_dir / "eval_report.json", json.dumps(report, indent=2) + "\n")
    click.echo("")
    click.echo(format_report(report))
    click.echo("")
    click.echo(f"score: {report['normalized_score_mean']:.1f} normalised "
               f"(0 = random actions, 100 = the scripted expert), return {report['return_mean']:.2f}")
    click.echo(f"run directory: {result.run_dir}  (report: {result.run_dir / 'eval_report.json'})")
    click.echo(f"TensorBoard:   tensorboard --logdir {result.run_dir}")
