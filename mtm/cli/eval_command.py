"""`mtm eval`: a checkpoint as a policy in its environment, or its predictions on held-out data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from mtm.cli.group import at_least, main
from mtm.hardware import DEVICE_CHOICES, PRECISIONS
from mtm.policy_config import POLICY_MODES, PREDICTION_TASK_NAMES, PolicyConfig


@main.command("eval")
@click.option("--checkpoint", required=True, metavar="DIR",
              help="A run directory (its last checkpoint) or a checkpoint directory.")
@click.option("--env", "env_id", default=None, help="Gymnasium id. Default: the env of the checkpoint's dataset.")
@click.option("--episodes", default=10, show_default=True, callback=at_least(1),
              help="Episodes to run (exactly this many).")
@click.option("--num-envs", default=10, show_default=True, callback=at_least(1),
              help="Environments stepped together, one batched forward pass per step.")
@click.option("--mode", default=None, type=click.Choice(POLICY_MODES),
              help="Which tokens the policy shows the model: bc, rcbc (conditioned on a target return), plan (RCBC "
                   "actions refined by the critic), id (the next state predicted, then the action by inverse "
                   "dynamics). Default: rcbc when the model can, else bc.")
@click.option("--target-return", type=float, default=None, help="RCBC: the episode return to ask for.")
@click.option("--target-fraction", type=float, default=None,
              help="RCBC: ask for min + p (max - min) of the training episode returns (1.0: the best seen). "
                   "Neither target given: the best training return that is not an outlier (above Q3 + 1.5 IQR).")
@click.option("--decrement/--constant", default=False, show_default=True,
              help="RCBC: lower the target by the rewards received, or hold it constant (official MTM).")
@click.option("--action-history/--no-action-history", default=PolicyConfig.action_history, show_default=True,
              help="Show the model the actions it took at the previous steps of the window, or only states "
                   "(and returns). With --task bc/rcbc: the same for the held-out windows.")
@click.option("--plan-candidates", type=int, default=None,
              help="plan: candidate action sequences per env and step [default: 64].")
@click.option("--plan-horizon", type=int, default=None, help="plan: steps each candidate is imagined for [default: 1].")
@click.option("--plan-temperature", type=float, default=None,
              help="plan: softmax temperature over candidate scores, in return-token stds [default: 0.02 scored by "
                   "the critic's Q, else 0.05].")
@click.option("--plan-relative-temperature", type=float, default=None,
              help="plan: a floor on the softmax temperature, in units of the std of the candidates' scores at "
                   "each step: never sharper than this, whatever the data's return spread [default: 1.0].")
@click.option("--plan-noise", type=float, default=None,
              help="plan: candidates' action noise, in units of the data's action std [default: 0.3].")
@click.option("--plan-max-gain", type=float, default=None,
              help="plan: cut the step from the RCBC action to max_gain / margin of it where the best candidate "
                   "scores more than this many return-token stds above the RCBC action [default: 0.2; a large value: "
                   "no cap].")
@click.option("--plan-score", type=click.Choice(["auto", "q", "value", "rewards"]), default=None,
              help="plan: score candidates by the critic's Q (needs model.critic), by their values, or by "
                   "predicted rewards plus the final value (needs a reward head) [default: auto, q where the "
                   "model has a critic, else rewards where it has a reward head, else value].")
@click.option("--plan-discount", type=float, default=None,
              help="plan, --plan-score rewards: discount of imagined rewards and the final value [default: 0.99].")
@click.option("--cuda-graph/--no-cuda-graph", default=False, show_default=True,
              help="CUDA: replay the policy's network call from a captured CUDA graph (one launch instead of "
                   "hundreds of small kernels) while every env slot acts.")
@click.option("--seed", default=0, show_default=True, help="Episode i is reset with seed + i, whatever --num-envs is.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICE_CHOICES))
@click.option("--precision", default="auto", show_default=True, type=click.Choice(PRECISIONS),
              help="auto: bf16 autocast only where the device multiplies bf16 natively, else fp32.")
@click.option("--video", "video", default=None, type=click.Path(dir_okay=False),
              help="Write an mp4 of the first episodes here, seen from a camera that follows the robot: every "
                   "step a frame, at the env's real-time rate capped at 30 frames/s (slow motion for faster "
                   "envs). A missing folder is created.")
@click.option("--contact-sheet", "contact_sheet", default=None, type=click.Path(dir_okay=False),
              help="Write a PNG grid of frames of the first episodes here, step and return on each tile.")
@click.option("--video-episodes", default=1, show_default=True,
              help="How many episodes the video and contact sheet show.")
@click.option("--video-quality", default="fast", show_default=True, metavar="fast|nice",
              help="fast: no shadows, reflections or anti-aliasing (many times faster on a CPU); "
                   "nice: MuJoCo's full look.")
@click.option("--video-size", default=256, show_default=True, help="Frame width and height in pixels.")
@click.option("--task", "tasks", multiple=True, type=click.Choice(PREDICTION_TASK_NAMES),
              help="Instead of rollouts: prediction errors on the held-out episodes (repeatable).")
@click.option("--data", default=None, metavar="PATH", help="--task: the dataset (default: the one the run trained on).")
@click.option("--output", default=None, type=click.Path(dir_okay=False),
              help="Write the report as JSON (a missing folder is created).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --output / --video / --contact-sheet file.")
@click.option("--progress/--no-progress", default=True, help="A progress bar, where stdout and stderr are terminals.")
def eval_command(checkpoint, env_id, episodes, num_envs, mode, target_return, target_fraction, decrement,
                 action_history, plan_candidates, plan_horizon, plan_temperature, plan_relative_temperature,
                 plan_noise, plan_max_gain,
                 plan_score, plan_discount, cuda_graph, seed, device, precision, video, contact_sheet, video_episodes, video_quality,
                 video_size, tasks, data, output, overwrite, progress) -> None:
    """Evaluate a trained model: returns and normalised score in the env, or dynamics errors.

    \b
    Examples:
      mtm eval --checkpoint runs/reacher --episodes 50 --num-envs 10
      mtm eval --checkpoint runs/hopper --mode rcbc --target-fraction 0.9 --video videos/hopper.mp4
      mtm eval --checkpoint runs/hopper --episodes 3 --video-episodes 3 --contact-sheet hopper.png
      mtm eval --checkpoint runs/hopper --mode plan --plan-candidates 64 --plan-horizon 1
      mtm eval --checkpoint runs/hopper --task fd --task id
    """
    from mtm.checkpoint import load_checkpoint
    from mtm.errors import ConfigError
    from mtm.evaluation import evaluate_checkpoint, evaluate_predictions, format_report
    from mtm.hardware import resolve_device, thread_summary
    from mtm.io import atomic_write_text, check_output_path, refuse_existing_output, write_failure
    from mtm.training.progress import interactive
    from mtm.video import RolloutMedia

    # Bad media options fail here, before a checkpoint is loaded or an episode is run.
    media = RolloutMedia(video=Path(video) if video else None,
                         contact_sheet=Path(contact_sheet) if contact_sheet else None,
                         episodes=video_episodes, quality=video_quality, size=video_size)
    try:
        plan = {"plan_candidates": plan_candidates, "plan_horizon": plan_horizon,
                "plan_temperature": plan_temperature, "plan_relative_temperature": plan_relative_temperature,
                "plan_noise": plan_noise, "plan_max_gain": plan_max_gain,
                "plan_score": plan_score, "plan_discount": plan_discount}
        policy = PolicyConfig(mode=mode or "auto", target_return=target_return, target_fraction=target_fraction,
                              decrement=decrement, action_history=action_history,
                              precision=precision, cuda_graph=cuda_graph).replace(**plan)
    except ValueError as exc:  # e.g. both targets given
        message = str(exc).replace("target_return and target_fraction", "--target-return and --target-fraction")
        for field in plan:
            message = message.replace(field, "--" + field.replace("_", "-"))
        raise ConfigError(message) from None
    files = [Path(p).resolve() for p in (output, video, contact_sheet) if p is not None]
    if len(set(files)) < len(files):
        raise ConfigError("--output, --video and --contact-sheet need different files")
    # Before any rollout: an existing file or a folder that cannot take them fails now. Every
    # output is checked for overwriting before a missing folder is created for any of them.
    outputs = [path for path in (output, video, contact_sheet) if path is not None]
    for path in outputs:
        refuse_existing_output(path, overwrite)
    for path in outputs:
        check_output_path(path, overwrite)
    ck = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    if dev.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):  # the user's choice wins
        import torch

        # The model and the simulator take turns in one process: one thread was fastest for act()
        # at every batch size measured (BENCHMARKS.md), and leaves a core to the rest.
        torch.set_num_threads(1)
    runtime = [f"device {dev}"]  # the policy's precision depends on its batch: the report says it
    if dev.type == "cpu":
        runtime.append(thread_summary())
    click.echo(", ".join(runtime))
    if tasks:
        report = evaluate_predictions(ck, tasks=tuple(dict.fromkeys(tasks)), data_path=data, device=dev,
                                      action_history=action_history)
        held_out = report["val_episodes"]
        click.echo(f"prediction errors on {held_out} held-out episode{'' if held_out == 1 else 's'} of "
                   f"{report['data']} (MSE, raw units; baseline predicts the train mean; ratio = MSE / baseline, "
                   f"lower is better):")
        for task, e in report["tasks"].items():
            click.echo(f"  {task:5s} {e['mse']:10.4f}   baseline {e['baseline_mse']:10.4f}   ratio {e['ratio']:.3f}")
    else:
        report = evaluate_checkpoint(ck, env_id=env_id, episodes=episodes, num_envs=num_envs, policy=policy,
                                     seed=seed, device=dev, media=media,
                                     progress=progress and interactive())  # no \r bar in a log file
        click.echo(format_report(report))
    if output:
        try:
            atomic_write_text(output, json.dumps(report, indent=2) + "\n")
        except OSError as exc:  # checked writable before the rollouts; the disk may still fill up
            failure = write_failure(exc, output)
            if failure is None:
                raise
            raise failure from None
        click.echo(f"report: {output}")
