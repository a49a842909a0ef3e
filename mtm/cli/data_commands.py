"""`mtm convert` and `mtm inspect`: get data into the native format and look at it."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import click

from envs.references import reference_scores  # imports nothing: costs `mtm --help` nothing
from mtm.cli.group import main
from mtm.data.formats import FORMATS
from mtm.errors import ConfigError, MTMWarning

_FORMAT_OPTION = click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
                              help="Source format. [default: detected from the file's layout]")
_FILTER_KEY_OPTION = click.option("--filter-key", default=None,
                                  help="robomimic only: read just the demos listed under mask/<KEY>.")


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@_FORMAT_OPTION
@_FILTER_KEY_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of a report.")
@click.option("--video", "video", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Replay the first episodes through the simulator (from the recorded infos/qpos and "
                   "infos/qvel) and write them as an mp4 here, like mtm eval --video.")
@click.option("--contact-sheet", "contact_sheet", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Replay the first episodes and write a PNG grid of frames here, step and return on each tile.")
@click.option("--episodes", default=1, show_default=True, help="How many episodes --video / --contact-sheet replay.")
@click.option("--env", "env_id", default=None, help="Env to replay in. [default: the file's env id]")
@click.option("--video-quality", default="fast", show_default=True, metavar="fast|nice",
              help="fast: no shadows, reflections or anti-aliasing; nice: MuJoCo's full look.")
@click.option("--video-size", default=256, show_default=True, help="Frame width and height in pixels.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --video / --contact-sheet file.")
def inspect(file: Path, fmt: str | None, filter_key: str | None, as_json: bool, video: Path | None,
            contact_sheet: Path | None, episodes: int, env_id: str | None, video_quality: str, video_size: int,
            overwrite: bool) -> None:
    """Summarise a dataset FILE (native, D4RL, Minari folder or robomimic): sizes, returns, lengths.

    \b
    With --video / --contact-sheet, also replay its first episodes through the simulator:
      mtm inspect hopper.hdf5 --contact-sheet hopper.png --episodes 2
    """
    from mtm.data.formats import open_dataset
    from mtm.data.summary import summarize

    media = None
    if video is None and contact_sheet is None and (env_id is not None or episodes != 1):
        raise ConfigError("--episodes and --env choose what --video / --contact-sheet replay; give one of those too")
    if video is not None or contact_sheet is not None:
        from mtm.io import refuse_existing_output
        from mtm.video import RolloutMedia

        if episodes < 1:
            raise ConfigError(f"--episodes must be >= 1, got {episodes}")
        media = RolloutMedia(video=video, contact_sheet=contact_sheet, episodes=episodes, quality=video_quality,
                             size=video_size)
        for path in (video, contact_sheet):
            if path is not None:
                refuse_existing_output(path, overwrite)
    with open_dataset(file, fmt, filter_key=filter_key) as source:
        if media is not None:  # a folder that cannot take the files fails before the replay, not after it
            from mtm.io import check_writable_folder

            for path in (video, contact_sheet):
                if path is not None:
                    check_writable_folder(path)
        summary = {"path": str(file), **summarize(source)}
        if media is not None:
            summary["replay"] = _replay(source, media, env_id)
    references = summary["reference_scores"]
    if references is not None and references.get("warning"):
        warnings.warn(references["warning"], MTMWarning, stacklevel=1)
    click.echo(json.dumps(summary, indent=2) if as_json else format_report(summary))


def _replay(source: Any, media: Any, env_id: str | None) -> dict[str, Any]:
    """Replay `source`'s first episodes into `media`'s files; the report's replay fields."""
    from mtm.contact_sheet import write_contact_sheet
    from mtm.replay import replay_env_id, replay_frames
    from mtm.video import video_rate, write_video

    # Every refusal (no recorded state, no env) comes before a frame is drawn or a file made.
    recorded, env_fps, camera = replay_frames(source, env_id, media.episodes, media.size, media.quality)
    out: dict[str, Any] = {"env_id": replay_env_id(source, env_id), "episodes": [e.index for e in recorded],
                           "frames": sum(len(e.frames) for e in recorded), "size": media.size,
                           "quality": media.quality, "camera": camera}
    if media.video is not None:
        fps, speed = video_rate(env_fps)
        out["video"] = str(write_video(media.video, recorded, fps))
        out.update(video_fps=fps, video_speed=speed)
    if media.contact_sheet is not None:
        out["contact_sheet"] = str(write_contact_sheet(media.contact_sheet, recorded))
    return out


@main.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@_FORMAT_OPTION
@_FILTER_KEY_OPTION
@click.option("--overwrite", is_flag=True, help="Replace DST if it exists (only once the new file is complete).")
@click.option("--env-id", default=None, help="Gymnasium env id to record, e.g. Hopper-v5. [default: from SRC]")
@click.option("--ref-min", type=float, default=None, help="Reference return for a normalised score of 0.")
@click.option("--ref-max", type=float, default=None, help="Reference return for a normalised score of 100.")
@click.option("--drop", "drops", multiple=True, metavar="MODALITY[:FRACTION]",
              help="Leave actions (or rewards) out of a FRACTION of the episodes, whole episodes drawn with "
                   "--seed: actions makes a state-only copy, actions:0.95 keeps actions on 5% (repeatable).")
@click.option("--seed", type=int, default=0, help="Seed of the episodes --drop picks.")
def convert(src: Path, dst: Path, fmt: str | None, filter_key: str | None, overwrite: bool,
            env_id: str | None, ref_min: float | None, ref_max: float | None, drops: tuple[str, ...],
            seed: int) -> None:
    """Convert SRC (any supported format) to an mtm episode file DST.

    DST is written as DST.partial and renamed into place when complete: a failed or interrupted
    conversion leaves no output and never damages an existing DST.

    \b
    Partly labelled data from complete data (the same seed picks the same episodes):
      mtm convert hopper.hdf5 hopper-5pc.hdf5 --drop actions:0.95 --seed 0
    """
    from tqdm import tqdm

    from mtm.data.formats import open_dataset
    from mtm.data.formats.native import EpisodeWriter
    from mtm.data.mixture import drop_plan, parse_drop
    from mtm.io import check_writable_folder, refuse_existing_output, write_failure

    dropping = dict(parse_drop(text) for text in drops)
    if (ref_min is None) != (ref_max is None):
        raise ConfigError("--ref-min and --ref-max go together; give both or neither")
    if ref_min is not None and not ref_min < ref_max:
        raise ConfigError(f"--ref-min ({ref_min}) must be below --ref-max ({ref_max})")
    # Check the output before reading the source, which can take a while; its folder is created only
    # once the source has opened (a bad SRC leaves nothing behind).
    refuse_existing_output(dst, overwrite)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ConfigError(f"{dst}: SRC and DST are the same file; choose another output path")

    with open_dataset(src, fmt, filter_key=filter_key) as source:
        check_writable_folder(dst)
        info = _with_overrides(source.info, env_id, ref_min, ref_max)
        plan = drop_plan(len(source), dropping, seed)
        if plan:  # the file says how it was made, so that it can be made again
            info = dataclasses.replace(info, extra={**info.extra, "dropped": {
                name: {"fraction": dropping[name], "seed": seed, "episodes": int(flags.sum())}
                for name, flags in plan.items()}})
        try:
            with EpisodeWriter(dst, info, overwrite=overwrite) as writer:
                for i, episode in enumerate(tqdm(source, total=len(source), desc="converting", unit="episode",
                                                 disable=None)):
                    gone = {name: None for name, flags in plan.items() if flags[i]}
                    writer.add(dataclasses.replace(episode, **gone) if gone else episode)
        except OSError as exc:  # the writer reports the disk's failures itself; anything else of the kind
            failure = write_failure(exc, dst)
            if failure is None:
                raise
            raise failure from None
    dropped = "".join(f"; {name} left out of {int(flags.sum())} episodes (seed {seed})" for name, flags in plan.items())
    n = writer.num_episodes
    click.echo(f"wrote {n} episode{'' if n == 1 else 's'}, {writer.num_steps} steps to {dst}{dropped}")


def _with_overrides(info: Any, env_id: str | None, ref_min: float | None, ref_max: float | None) -> Any:
    """The source's DatasetInfo with the command line's corrections applied. A new --env-id only fills
    in references the source lacked: the source's own describe its data."""
    changes: dict[str, Any] = {}
    if env_id is not None:
        changes["env_id"] = env_id
        known = reference_scores(env_id)
        if known is not None and info.ref_min_score is None:
            changes["ref_min_score"], changes["ref_max_score"] = known
    if ref_min is not None:
        changes["ref_min_score"], changes["ref_max_score"] = ref_min, ref_max
    return dataclasses.replace(info, **changes)


def format_report(s: dict[str, Any]) -> str:
    """The human-readable `mtm inspect` report for a `summarize` dict (plus its "path")."""
    fmt = s["format"] if s["format"] == s["source_format"] else f"{s['format']} (from {s['source_format']})"
    rows: list[tuple[str, str]] = [("format", fmt)]
    if s["source"] != str(Path(s["path"]).resolve()):  # a converted file names its origin
        rows.append(("source", s["source"]))
    rows.append(("env", s["env_id"] or "unknown"))
    ended = s["episodes_ended"]
    rows.append(("episodes", f"{s['num_episodes']}   terminated {ended['terminated']}, "
                             f"truncated {ended['truncated']}, partial {ended['partial']}"))
    final = "yes" if s["has_final_observation"] else "no"
    rows.append(("steps", f"{s['num_steps']}   final observation recorded: {final}"))
    shapes = {name: str(tuple(m["shape"])) for name, m in s["modalities"].items()}
    listed = list(s["modalities"]) + [m for m in ("actions", "rewards") if m not in s["modalities"]]
    name_width = max(map(len, listed), default=0)
    shape_width = max(map(len, shapes.values()), default=0)
    episodes_with, steps_with = s.get("episodes_with", {}), s.get("steps_with", {})
    for i, name in enumerate(listed):
        m = s["modalities"].get(name)
        if m is None:  # no episode carries it: a state-only or reward-free file
            text = f"{name:<{name_width}}  none: no episode has {name}"
        else:
            text = f"{name:<{name_width}}  {shapes[name]:<{shape_width}}  {m['dtype']}"
            e = episodes_with.get(name, s["num_episodes"])
            if e < s["num_episodes"]:  # a partly labelled file: say how much carries it
                text += f"   in {e} of {s['num_episodes']} episodes, {steps_with[name]} of {s['num_steps']} steps"
        rows.append(("per step" if i == 0 else "", text))
    filters = s.get("filters")
    if filters is not None:
        available = filters["available"]
        if not available:
            rows.append(("filters", "none (the file has no mask/ group)"))
        else:
            listed = "demos in " + ", ".join(f"{name} {count}" for name, count in available.items())
            chosen = (f"   (reading {filters['selected']})" if filters["selected"]
                      else "   (--filter-key KEY reads one split)")
            rows.append(("filters", listed + chosen))
    r = s["returns"]
    rewarded = episodes_with.get("rewards", s["num_episodes"])
    if r is None:
        rows.append(("returns", "none: no episode has rewards"))
    else:
        some = f"   (the {rewarded} episodes with rewards)" if rewarded < s["num_episodes"] else ""
        rows.append(("returns", f"mean {r['mean']:.1f} +/- {r['std']:.1f}   min {r['min']:.1f}   "
                                f"max {r['max']:.1f}{some}"))
        if r.get("histogram"):
            rows += [("", line) for line in _histogram_lines(r["histogram"], indent="", decimals=1)]
    ref = s["reference_scores"]
    if ref is not None:
        text = f"min {ref['min']:.1f}   max {ref['max']:.1f}"
        if s["normalized_return_mean"] is not None:
            text += f"   normalised mean return {s['normalized_return_mean']:.1f}"
        rows.append(("reference", text))
        if ref.get("source"):
            rows.append(("", f"from {ref['source']}" + ("   (suspect: see the warning)" if ref.get("warning") else "")))
    else:
        rows.append(("reference", "none (set with mtm convert --ref-min/--ref-max)"))
    lengths = s["episode_lengths"]
    if lengths is not None:
        rows.append(("lengths", f"min {lengths['min']}   mean {lengths['mean']:.1f}   max {lengths['max']}"))
    lines = [s["path"]] + [f"  {label:<11}{text}" for label, text in rows]
    if lengths is not None:
        lines += _histogram_lines(lengths["histogram"], indent=" " * 13)
    replay = s.get("replay")
    if replay is not None:
        n = len(replay["episodes"])
        what = f"{n} episode{'' if n == 1 else 's'}, {replay['frames']} frames in {replay['env_id']}"
        if replay.get("video"):
            lines.append(f"  {'video':<11}{replay['video']}   {what}, {replay['video_fps']} frames/s "
                         f"({replay['video_speed']:.2f}x real time)")
        if replay.get("contact_sheet"):
            lines.append(f"  {'sheet':<11}{replay['contact_sheet']}   {what}")
    return "\n".join(lines)


def _histogram_lines(bins: list[dict[str, Any]], indent: str, width: int = 40,
                     decimals: int | None = None) -> list[str]:
    """Text bars of a histogram; integer bounds as they are, float ones (returns) to `decimals`."""
    top = max(b["count"] for b in bins)

    def text(x: Any) -> str:
        return str(x) if decimals is None else f"{x:.{decimals}f}"

    label_width = max(len(text(b[k])) for b in bins for k in ("low", "high"))
    lines = []
    for b in bins:
        # Any non-empty bin gets at least one mark so that rare lengths stay visible.
        bar = "#" * max(round(width * b["count"] / top), 1 if b["count"] else 0)
        sep = "-" if decimals is None else " .. "  # returns can be negative: -10.3 .. -8.5, not -10.3--8.5
        span = f"{text(b['low']):>{label_width}}{sep}{text(b['high']):<{label_width}}"
        lines.append(f"{indent}{span}  {bar:<{width}}  {b['count']}")
    return lines
