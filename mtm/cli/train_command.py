"""`mtm train`: configure (file + --set overrides), train or resume, report where everything is."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mtm.cli.group import main
from mtm.hardware import DEVICE_CHOICES
from mtm.interrupts import describe, exit_code

# The built-in configs, for --help: the files mtm.config.loader.BUILTIN_CONFIGS_DIR holds, listed
# here without importing mtm.config (it loads torch, and `mtm train --help` must stay fast).
BUILTIN_CONFIG_NAMES = sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.yaml"))


# Listed in the epilog, kept from rewrapping (\b): click wraps help text at hyphens, which would
# split names such as mlp-rcbc across lines.
@main.command("train", epilog="\b\nBuilt-in configs: " + ", ".join(BUILTIN_CONFIG_NAMES))
@click.option("--config", "config_name", default=None, metavar="NAME|FILE",
              help="A built-in config (listed below) or a YAML/JSON file. Default: the dataclass defaults.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one field, e.g. --set train.lr=3e-4 --set model.width=256 (repeatable).")
@click.option("--data", multiple=True, metavar="PATH",
              help="Dataset to train on (same as --set data.path=PATH). Repeat it to train on several files "
                   "at once (data.extra_paths), e.g. a few labelled episodes plus state-only ones.")
@click.option("--run-dir", default=None, metavar="DIR", help="Where the run goes (same as --set train.run_dir=DIR).")
@click.option("--device", default=None, type=click.Choice(DEVICE_CHOICES),
              help="Same as --set train.device=...")
@click.option("--resume", default=None, metavar="RUN_DIR",
              help="Continue the run in RUN_DIR from its last checkpoint (its config.yaml, plus any --set). A new "
                   "train.steps re-plans the learning-rate schedule from there, and says so.")
@click.option("--overwrite", is_flag=True,
              help="Replace the mtm run in --run-dir (kept until the new run saves its first checkpoint).")
@click.option("--progress/--no-progress", default=True,
              help="A progress bar where stdout and stderr are terminals; with --no-progress or output to a "
                   "file or pipe, one timestamped line per train.log_every (step, loss, lr, samples/s, elapsed, ETA).")
def train_command(config_name, overrides, data, run_dir, device, resume, overwrite, progress) -> None:
    """Train a masked trajectory model on an offline dataset.

    \b
    Examples:
      mtm train --config demo --data datasets/reacher-v5-mixed.hdf5 --run-dir runs/reacher
      mtm train --config reference --data hopper-medium-replay-v5.hdf5 --set train.precision=bf16
      mtm train --resume runs/reacher --set train.steps=20000
      mtm train --config small --data labelled.hdf5 --data state-only.hdf5 --run-dir runs/mix
    """
    from mtm.config import RunConfig, load_config, resolve_config_path
    from mtm.errors import ConfigError
    from mtm.training.loop import train
    from mtm.training.rundir import CONFIG_FILE, recover
    from mtm.training.run_data import same_file_pair

    twice = same_file_pair([str(p) for p in data])
    if twice is not None:
        i, j = twice
        nth = {1: "1st", 2: "2nd", 3: "3rd"}
        raise ConfigError(f"one file given twice: --data {data[i]} ({nth.get(i + 1, f'{i + 1}th')}) and --data {data[j]} "
                          f"({nth.get(j + 1, f'{j + 1}th')}); give each dataset once (its episodes would count twice, "
                          f"and held-out episodes of one copy could train in the other)")
    extra = list(overrides)
    first = data[0] if data else None
    for key, value in (("data.path", first), ("train.run_dir", run_dir), ("train.device", device)):
        if value is not None:
            extra.append(f"{key}={value}")
    if len(data) > 1:
        extra.append(f"data.extra_paths={json.dumps([str(p) for p in data[1:]])}")
    if resume is not None:
        if config_name is not None:
            raise ConfigError("--resume continues a run with its own config.yaml; drop --config "
                              "(use --set to change fields)")
        if overwrite:
            raise ConfigError("--resume continues a run and --overwrite replaces one; give only one of them")
        moved = [o.split("=", 1)[1] for o in extra if o.startswith("train.run_dir=")]
        if any(Path(d).resolve() != Path(resume).resolve() for d in moved):
            # The run continues where it is; another directory would only be written into its config.yaml.
            raise ConfigError(f"--resume continues the run in {resume}, where it is; drop --run-dir "
                              f"(to start a new run, copy the directory and resume the copy)")
        # A killed --overwrite may have left the earlier run set aside: put it back before its
        # config.yaml is read.
        recover(resume)
        base = Path(resume) / CONFIG_FILE
        if not base.exists():
            raise ConfigError(f"{resume}: not a run directory (no {CONFIG_FILE}); nothing to resume")
        cfg = load_config(RunConfig, base, extra)
    else:
        cfg = load_config(RunConfig, resolve_config_path(config_name) if config_name else None, extra)

    result = train(cfg, resume=resume, overwrite=overwrite, progress=progress, say=click.echo)
    if not result.is_main:
        return  # under torchrun only rank 0 reports
    if result.val:
        click.echo("validation (held-out episodes, MSE in raw units; baseline = predict the train mean; "
                   "ratio = MSE / baseline, lower is better):")
        for task, e in result.val.items():
            click.echo(f"  {task:5s} {e['mse']:10.4f}   baseline {e['baseline_mse']:10.4f}   ratio {e['ratio']:.3f}")
    if result.eval:
        from mtm.evaluation import format_report

        click.echo(f"evaluation at step {result.step} (final checkpoint):")
        click.echo(format_report(result.eval))
    click.echo(f"step {result.step}; checkpoint: {result.checkpoint}")
    click.echo(f"TensorBoard: tensorboard --logdir {result.run_dir}")
    if result.interrupted:
        click.echo(f"{describe(result.stop_signal)}: continue with  mtm train --resume {result.run_dir}", err=True)
        sys.exit(exit_code(result.stop_signal))
