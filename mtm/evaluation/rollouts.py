"""A trained model in its environment: returns, normalised scores, videos and contact sheets.

`evaluate_policy` runs exactly N episodes over K environments (episode i reset with seed + i, so the
results do not depend on K: mode plan draws each episode's candidate noise from a stream of its own;
only precision auto may pick another precision for another K) and reports per-episode return and length, mean ± std (population std
over the N episodes), the normalised score 100 · (R − R_min) / (R_max − R_min) with the references
the data carries (D4RL's, Minari's, the native file's) or else envs.references (also when the data's
own put its mean return far off the scale: `references_for`), for tasks that define success
(envs.tasks.TaskSpec.success) the share of episodes that end solved, and the env steps per second
of the whole loop (simulation + policy).
"""

from __future__ import annotations

import contextlib
import datetime
import warnings
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mtm.version import __version__
from envs.references import choose_references, normalized_score
from envs.tasks import TASKS
from mtm.checkpoint import Checkpoint
from mtm.contact_sheet import write_contact_sheet
from mtm.errors import ConfigError, MTMWarning
from mtm.policy import MTMPolicy, load_model
from mtm.policy_config import PolicyConfig
from mtm.rollout import EpisodeRunner, PixelSpec
from mtm.run_metadata import RunMetadata
from mtm.video import MAX_VIDEO_FPS, FrameRecorder, RolloutMedia, video_rate, write_video


def references_for(metadata: RunMetadata, env_id: str) -> dict[str, Any] | None:
    """{min, max, source} reference returns: the data's own, unless they put the training data's
    mean return far off the normalised scale; then (or when the data has none) mtm's table for the
    env. A "warning" (one line) says when the references are suspect (envs.references)."""
    info = metadata.data_info
    own = None
    if info.ref_min_score is not None and info.ref_max_score is not None:
        own = (info.ref_min_score, info.ref_max_score)
    mean_return = metadata.returns.mean if metadata.returns is not None else None
    return choose_references(own, f"dataset ({info.source_format}: {info.source})", env_id, mean_return)


def check_env_matches(runner: EpisodeRunner, policy: MTMPolicy, env_id: str) -> None:
    """The env's observation and action sizes must be the ones the model was trained on."""
    space = runner.observation_space
    if hasattr(space, "spaces"):  # Dict observation: the model's state keys, concatenated
        missing = [k for k in policy.state_keys if k not in space.spaces]
        if missing:
            raise ConfigError(f"{env_id}: observations have no key(s) {missing} that the model was trained on")
        obs_dim = sum(int(np.prod(space.spaces[k].shape)) for k in policy.state_keys)
        for key, frames in policy.images.items():
            if key not in space.spaces:
                raise ConfigError(f"{env_id}: observations have no image {key!r}, which the model reads")
            if tuple(space.spaces[key].shape) != tuple(frames.shape[2:]):
                raise ConfigError(f"{env_id}: image {key!r} is {tuple(space.spaces[key].shape)}, the model "
                                  f"was trained on {tuple(frames.shape[2:])}")
    else:
        obs_dim = int(np.prod(space.shape))
    if obs_dim != policy.state_dim:
        raise ConfigError(f"{env_id}: observations have {obs_dim} dimensions, the checkpoint was trained on "
                          f"{policy.state_dim}; evaluate it in the env it was trained for (--env)")
    act_dim = int(np.prod(runner.action_space.shape))
    if act_dim != policy.action_dim:
        raise ConfigError(f"{env_id}: actions have {act_dim} dimensions, the checkpoint predicts {policy.action_dim}")


def task_success(env_id: str):
    """The task's test of a solved episode, applied to the env after its last step (e.g. the object
    within 5 cm of the goal in mtm/PusherPixels-v0); None for tasks that define none."""
    spec = TASKS.get(env_id)
    return None if spec is None else spec.success


def evaluate_policy(policy_factory, metadata: RunMetadata, env_id: str, *, episodes: int, num_envs: int,
                    seed: int = 0, media: RolloutMedia | None = None, pixels: PixelSpec | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Run `episodes` episodes of `policy_factory(num_envs)` in `env_id` and report (see module doc).
    `media`: also write a video and / or a contact sheet of the first episodes (mtm.video)."""
    if episodes < 1:
        raise ConfigError(f"the number of episodes must be >= 1, got {episodes}")
    if num_envs < 1:
        raise ConfigError(f"the number of environments must be >= 1, got {num_envs}")
    slots = min(num_envs, episodes)
    recorder = None
    if media is not None and media.wanted:
        recorder = FrameRecorder(min(media.episodes, episodes), media.size, media.quality)
    # Frames come from a renderer of the recorder's own (mtm.video), so the envs need no render mode.
    with EpisodeRunner(env_id, slots, pixels=pixels) as runner, recorder or contextlib.nullcontext():
        policy = policy_factory(slots)
        check_env_matches(runner, policy, env_id)
        if recorder is not None:
            recorder.check(runner.envs[0])
        results: dict[int, dict[str, Any]] = {}
        success = task_success(env_id)
        solved: dict[int, bool] = {}  # per episode: the task's success test after its latest step

        def on_step(index: int, env) -> None:
            if recorder is not None:
                recorder(index, env)
            if success is not None:
                solved[index] = bool(success(env))

        with tqdm(total=episodes, desc=f"eval {env_id}", unit="episode", dynamic_ncols=True,
                  disable=not progress) as bar:
            hook = on_step if recorder is not None or success is not None else None
            for index, episode in runner.run(policy, episodes, seed, on_step=hook):
                results[index] = {"index": index, "seed": episode.seed, "return": episode.episode_return,
                                  "length": episode.length, "terminated": episode.terminated}
                if success is not None:
                    results[index]["success"] = solved[index]  # at the episode's last step
                if recorder is not None:
                    recorder.finish(index, episode.rewards, episode.terminated)
                if progress:
                    bar.update(1)
                    bar.set_postfix(mean_return=f"{np.mean([r['return'] for r in results.values()]):.1f}")
        steps_per_s = runner.stats.steps_per_s
        env_fps = float(runner.envs[0].metadata.get("render_fps") or MAX_VIDEO_FPS) if runner.envs else MAX_VIDEO_FPS
    per_episode = [results[i] for i in sorted(results)]
    returns = np.array([r["return"] for r in per_episode])
    refs = references_for(metadata, env_id)
    report: dict[str, Any] = {
        "env_id": env_id,
        "episodes": len(per_episode),
        "num_envs": slots,
        "seed": seed,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "length_mean": float(np.mean([r["length"] for r in per_episode])),
        "reference_scores": refs,
        "normalized_score_mean": None,
        "normalized_score_std": None,
        "env_steps_per_s": steps_per_s,
        "per_episode": per_episode,
    }
    if success is not None:  # only tasks that define success (envs.tasks.TaskSpec.success)
        report["success_rate"] = float(np.mean([r["success"] for r in per_episode]))
    if refs is not None and refs["max"] != refs["min"]:
        scores = normalized_score(returns, refs["min"], refs["max"])
        report["normalized_score_mean"] = float(scores.mean())
        report["normalized_score_std"] = float(scores.std())
        for r, s in zip(per_episode, scores):
            r["normalized_score"] = float(s)
    if recorder is not None:
        report.update(_write_media(recorder, media, env_fps))
    return report


def _write_media(recorder: FrameRecorder, media: RolloutMedia, env_fps: float) -> dict[str, Any]:
    """Write the video and / or contact sheet of `recorder`'s episodes; their report fields. The
    video has a frame per step at the env's real-time rate, capped (mtm.video.video_rate)."""
    recorded = recorder.episodes_in_order()
    fps, speed = video_rate(env_fps)
    out: dict[str, Any] = {
        "recorded_episodes": [e.index for e in recorded],
        "video_frames": recorder.num_frames,
        "video_size": media.size,
        "video_quality": media.quality,
        "video_camera": recorder.camera_description,
        "video_render_frames_per_s": recorder.num_frames / recorder.render_seconds if recorder.render_seconds else None,
    }
    if media.video is not None:
        out["video"] = str(write_video(media.video, recorded, fps))
        out.update(video_fps=fps, video_speed=speed)
    if media.contact_sheet is not None:
        out["contact_sheet"] = str(write_contact_sheet(media.contact_sheet, recorded))
    return out


def policy_fields(policy: MTMPolicy, config: PolicyConfig) -> dict[str, Any]:
    """How the policy acted, for a report (`mtm eval`'s and training's evaluations): the mode `auto`
    resolved to, for a mode that conditions on the return its target, and for plan the planner."""
    conditioned = policy.conditions_on_return
    return {
        "mode": policy.mode,
        "model_kind": policy.model.config.kind,
        "action_history": config.action_history,
        "target_return": policy.target_return if conditioned else None,
        "target_rule": policy.target_rule if conditioned else None,
        "target_outliers_left_out": policy.target_outliers if conditioned else None,
        "target_decrement": config.decrement if conditioned else None,
        "plan": policy.planner.describe() if policy.planner is not None else None,
        "cuda_graph": policy.cuda_graph is not None,
    }


def seed_overlap_warning(metadata: RunMetadata, env_id: str, seed: int, episodes: int) -> str | None:
    """One line when evaluation episodes (reset seeds seed .. seed + episodes - 1) would start where
    training episodes did: in the checkpoint's env, with reset seeds the data was collected from
    (`DataSummary.reset_seeds`). Their start states are then in the data, not held out."""
    ranges = metadata.data_info.reset_seeds
    if not ranges or env_id != metadata.env_id:
        return None
    last = seed + episodes - 1
    shared = sum(max(0, min(last, b) - max(seed, a) + 1) for a, b in ranges)
    if not shared:
        return None
    end = max(b for _, b in ranges) + 1
    span = ", ".join(f"{a}..{b}" for a, b in ranges)
    return (f"{shared} of {episodes} evaluation episodes (reset seeds {seed}..{last}) start where training episodes "
            f"did (the data was collected with reset seeds {span}); for held-out starts pass --seed {end}")


def evaluate_checkpoint(checkpoint: Checkpoint, *, env_id: str | None = None, episodes: int = 10, num_envs: int = 10,
                        policy: PolicyConfig | None = None, seed: int = 0, device: str | torch.device = "cpu",
                        media: RolloutMedia | None = None, progress: bool = False) -> dict[str, Any]:
    """The policy of a checkpoint in its env (or `env_id`), acting as `policy` says (default: the
    PolicyConfig defaults): the full `mtm eval` report."""
    policy = policy or PolicyConfig()
    metadata = checkpoint.run_metadata
    env_id = env_id or metadata.env_id
    if not env_id:
        raise ConfigError("the checkpoint's dataset names no environment; pass --env ENV_ID")
    model = load_model(checkpoint, device)
    pixels = PixelSpec.from_dict(metadata.data_info.pixels)

    built: list[MTMPolicy] = []  # the policy the rollouts act with, for the report

    def factory(slots: int) -> MTMPolicy:
        built.append(MTMPolicy(model, metadata, policy, num_envs=slots, device=device))
        return built[-1]

    references = references_for(metadata, env_id)
    if references is not None and references.get("warning"):  # before the rollouts, which take a while
        warnings.warn(references["warning"], MTMWarning, stacklevel=2)
    overlap = seed_overlap_warning(metadata, env_id, seed, episodes)
    if overlap:
        warnings.warn(overlap, MTMWarning, stacklevel=2)
    report = evaluate_policy(factory, metadata, env_id, episodes=episodes, num_envs=num_envs, seed=seed,
                             media=media, pixels=pixels, progress=progress)
    probe = built[0]  # its precision depends on its size: the one the rollouts acted with
    report.update(policy_fields(probe, policy))
    report.update({
        "checkpoint": str(checkpoint.path),
        "checkpoint_step": checkpoint.step,
        "dataset": metadata.dataset or None,
        "device": str(device),
        "precision": probe.precision.to_dict(),
        "threads": torch.get_num_threads() if torch.device(device).type == "cpu" else None,
        "mtm_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "note": "final checkpoint given; N episodes with seeds seed..seed+N-1; std over episodes",
    })
    return report


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _precision(p: dict[str, Any]) -> str:
    return f"{p['dtype']} ({p['reason']})"


def _plan_line(plan: dict[str, Any]) -> str:
    steps = f"{plan['horizon']} step{'s' if plan['horizon'] != 1 else ''}"
    floor = plan.get("relative_temperature")
    temperature = f"temperature {plan['temperature']:g}" + (f" (at least {floor:g} std of the scores)" if floor else "")
    return (f"{plan['candidates']} candidates x {steps}, {temperature}, "
            f"noise {plan['noise']:g} action std, scored by the {plan['scored_by']}")


def format_report(report: dict[str, Any]) -> str:
    """A few human-readable lines for the terminal."""
    lines = [
        f"{report['env_id']}: {_count(report['episodes'], 'episode')}, mode {report.get('mode', '-')}"
        + (f", target return {report['target_return']:.1f}" if report.get("target_return") is not None else "")
        + (f" (the best training return that is not an outlier; {report['target_outliers_left_out']} above it "
           f"left out: --target-fraction 1 asks for the best)" if report.get("target_outliers_left_out") else ""),
        *([f"  plan              {_plan_line(report['plan'])}"] if report.get("plan") else []),
        f"  return            {report['return_mean']:.2f} +/- {report['return_std']:.2f}   "
        f"(mean length {report['length_mean']:.1f})",
    ]
    if report.get("normalized_score_mean") is not None:
        refs = report["reference_scores"]
        score = f"{report['normalized_score_mean']:.1f} +/- {report['normalized_score_std']:.1f}"
        lines.append(f"  normalised score  {score}   (references {refs['min']:.2f} .. {refs['max']:.2f}: "
                     f"{refs['source']})")
    if report.get("success_rate") is not None:
        solved = sum(bool(r.get("success")) for r in report.get("per_episode", []))
        lines.append(f"  success           {100 * report['success_rate']:.0f} % ({solved} of "
                     f"{_count(report['episodes'], 'episode')} end solved)")
    lines.append(f"  env steps/s       {report['env_steps_per_s']:.0f} ({_count(report['num_envs'], 'env')}, "
                 f"policy included)")
    if report.get("precision"):
        planned = (report.get("plan") or {}).get("precision")
        lines.append(f"  precision         {_precision(report['precision'])}"
                     + (f"; planning {_precision(planned)}" if planned else ""))
    if report.get("video"):
        speed = report.get("video_speed")
        pace = "" if speed is None else (", real time" if abs(speed - 1) < 1e-6 else f", {speed:.2g}x real time")
        lines.append(f"  video             {report['video']}"
                     + (f" ({report['video_fps']} frames/s, a frame per step{pace})" if report.get("video_fps") else ""))
    if report.get("contact_sheet"):
        lines.append(f"  contact sheet     {report['contact_sheet']}")
    if report.get("video_frames"):
        rate = report.get("video_render_frames_per_s")
        lines.append(f"  frames            {report['video_frames']} at {report['video_size']} px, "
                     f"{report['video_quality']} quality" + (f", {rate:.0f} frames/s" if rate else "")
                     + f"; camera: {report['video_camera']}")
    if report.get("checkpoint"):
        lines.append(f"  checkpoint        {report['checkpoint']} (step {report['checkpoint_step']})")
    return "\n".join(lines)
