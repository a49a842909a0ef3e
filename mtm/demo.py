"""The built-in demo (`make demo`, README): collect Reacher-v5 expert data once into datasets/, train
mtm/configs/demo.yaml on it, evaluate the final checkpoint as an RCBC policy. Every run goes to a new
timestamped directory under runs/, so nothing is ever overwritten.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from envs import tasks
from mtm.checkpoint import load_checkpoint
from mtm.collect import CollectOptions, collect
from mtm.config import RunConfig, load_config, resolve_config_path
from mtm.training.progress import interactive
from mtm.data.formats.native import NativeSource
from mtm.errors import DataError
from mtm.evaluation import evaluate_checkpoint
from mtm.interrupts import interruption
from mtm.training.loop import train

DEMO_ENV = "Reacher-v5"


@dataclass
class DemoResult:
    data: Path
    run_dir: Path
    report: dict[str, Any]


def default_dataset(root: Path, say: Callable[[str], None], progress: bool = True) -> Path:
    """The demo's dataset: reuse a complete one from an earlier run, else collect it by its recipe."""
    recipe = tasks.TASKS[DEMO_ENV].recipe
    path = root / recipe.output
    if path.exists():
        try:
            with NativeSource(path) as src:
                if src.info.env_id == DEMO_ENV and len(src) == recipe.episodes:
                    say(f"using the dataset collected earlier: {path}")
                    return path
        except DataError:
            pass
        raise DataError(f"{path} exists but is not the demo's complete dataset; move it away or delete it")
    say(f"collecting the default dataset: {recipe.command(DEMO_ENV)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    collected = collect(CollectOptions(env_id=DEMO_ENV, policy=recipe.policy, episodes=recipe.episodes, output=path,
                                       num_envs=recipe.num_envs, seed=recipe.seed, noise=tuple(recipe.noise)),
                        progress=progress)
    if collected.interrupted:
        # The demo's own cache, collected again next time: a partial one would only block that run.
        if collected.path is not None:
            collected.path.unlink(missing_ok=True)
        raise interruption(collected.stop_signal)
    return path


def run_demo(root: Path = Path("."), *, overrides: tuple[str, ...] = (), episodes: int = 50,
             say: Callable[[str], None] = print, progress: bool = True) -> DemoResult:
    data = default_dataset(root, say, progress)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = root / "runs" / f"demo-{stamp}"
    cfg = load_config(RunConfig, resolve_config_path("demo"),
                      [f"data.path={data}", f"train.run_dir={run_dir}", *overrides])
    say(f"training a small MTM ({cfg.train.steps} steps) into {run_dir}")
    result = train(cfg, progress=progress, say=say)
    if result.interrupted:  # its checkpoint is saved; a stopped demo evaluates nothing
        raise interruption(result.stop_signal)
    recipe = tasks.TASKS[DEMO_ENV].recipe
    held_out = recipe.seed + recipe.episodes  # reset seeds the data was not collected from: new start states
    say(f"evaluating the final checkpoint: {episodes} episodes, RCBC, reset seeds from {held_out}")
    report = evaluate_checkpoint(load_checkpoint(result.run_dir), episodes=episodes, num_envs=10, seed=held_out,
                                 progress=progress and interactive())  # no \r bar in a log file, as mtm eval
    return DemoResult(data=data, run_dir=result.run_dir, report=report)
