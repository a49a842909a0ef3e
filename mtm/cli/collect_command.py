"""`mtm collect`: run a policy in a gymnasium env and save the episodes as a native dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mtm.cli.group import at_least, main
from mtm.interrupts import describe, exit_code


@main.command("collect")
@click.option("--env", "env_id", required=True, help="gymnasium env id, e.g. Reacher-v5")
@click.option("--policy", default="random", help="random | expert (the env's scripted expert)")
@click.option("--episodes", type=int, required=True, callback=at_least(1), help="number of episodes to collect")
@click.option("--num-envs", type=int, default=8, callback=at_least(1), help="environments stepped together")
@click.option("--seed", type=int, default=0, help="episode i is reset with seed SEED+i")
@click.option("--output", type=click.Path(path_type=Path), required=True,
              help="native episode file (.hdf5) to write (a missing folder is created)")
@click.option("--noise", default=None, help="expert action-noise std; comma-separated values (0,0.1,0.3) split the "
              "episodes into equal consecutive blocks for a mixed-quality dataset")
@click.option("--pixels", is_flag=True, help="also record rendered RGB frames (observation key 'pixels')")
@click.option("--image-size", type=int, default=None, help="frame height and width with --pixels  [default: 64]")
@click.option("--overwrite", is_flag=True, help="replace OUTPUT if it exists")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def collect_command(env_id: str, policy: str, episodes: int, num_envs: int, seed: int, output: Path,
                    noise: str | None, pixels: bool, image_size: int | None, overwrite: bool, progress: bool) -> None:
    """Collect a dataset: run POLICY for EPISODES episodes and write them to OUTPUT.

    Ctrl-C stops early and keeps every finished episode (the file is complete and valid).
    """
    from mtm.collect import CollectOptions, collect, parse_noise
    from mtm.errors import ConfigError
    from mtm.rollout import PixelSpec

    if image_size is not None and not pixels:
        raise ConfigError("--image-size needs --pixels")
    options = CollectOptions(env_id=env_id, policy=policy, episodes=episodes, output=output, num_envs=num_envs,
                             seed=seed, noise=parse_noise(noise), overwrite=overwrite,
                             pixels=PixelSpec(size=64 if image_size is None else image_size) if pixels else None)
    result = collect(options, progress=progress)
    returns = result.returns
    if result.path is None:
        click.echo(f"{describe(result.stop_signal)} before the first episode finished; nothing was written", err=True)
        sys.exit(exit_code(result.stop_signal))
    envs = min(num_envs, episodes)
    click.echo(
        f"saved {result.episodes} episode{'' if result.episodes == 1 else 's'} ({result.steps} steps) to {result.path}\n"
        f"return mean {sum(returns) / len(returns):.3f}, min {min(returns):.3f}, max {max(returns):.3f}; "
        f"{result.stats.steps_per_s:,.0f} env steps/s with {envs} env{'' if envs == 1 else 's'}",
        err=result.interrupted,
    )
    if result.interrupted:
        click.echo(f"{describe(result.stop_signal)}: kept the {result.episodes} of {episodes} episodes that had finished",
                   err=True)
        sys.exit(exit_code(result.stop_signal))
