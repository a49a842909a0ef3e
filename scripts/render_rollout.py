"""Render episodes of a trained mtm policy to an mp4 file (and, if asked, a contact sheet).

    MUJOCO_GL=egl python scripts/render_rollout.py runs/reacher reacher.mp4
    MUJOCO_GL=egl python scripts/render_rollout.py runs/hopper hopper.mp4 --contact-sheet hopper.png --quality nice

The same path as `mtm eval --video` (mtm.evaluation.evaluate_checkpoint): a camera that follows the
robot, the fast rendering preset unless --quality nice. Existing files are kept unless --overwrite.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before mujoco loads

from mtm.checkpoint import load_checkpoint  # noqa: E402
from mtm.io import check_output_path  # noqa: E402
from mtm.errors import MTMError  # noqa: E402
from mtm.evaluation import evaluate_checkpoint  # noqa: E402
from mtm.video import DEFAULT_QUALITY, DEFAULT_SIZE, QUALITIES, RolloutMedia  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run directory or a checkpoint directory")
    parser.add_argument("output", help="the mp4 file to write")
    parser.add_argument("--env", default=None, help="gymnasium id (default: the checkpoint's env)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=1, help="episodes, one after another in the video")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="frame width and height in pixels")
    parser.add_argument("--quality", default=DEFAULT_QUALITY, help=f"one of {', '.join(QUALITIES)}")
    parser.add_argument("--contact-sheet", default=None, help="also write a PNG grid of frames here")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args()

    try:
        media = RolloutMedia(video=Path(args.output), contact_sheet=Path(args.contact_sheet) if args.contact_sheet else None,
                             episodes=args.episodes, quality=args.quality, size=args.size)
        for path in (args.output, args.contact_sheet):
            if path is not None:
                check_output_path(path, args.overwrite)
        report = evaluate_checkpoint(load_checkpoint(args.checkpoint), env_id=args.env, episodes=args.episodes,
                                     num_envs=1, seed=args.seed, media=media)
    except MTMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    returns = ", ".join(f"{e['return']:.2f}" for e in report["per_episode"])
    print(f"return {returns}, {report['video_frames']} frames -> {report['video']}")
    if report.get("contact_sheet"):
        print(f"contact sheet -> {report['contact_sheet']}")
    print(f"camera: {report['video_camera']}; {report['video_quality']} quality, "
          f"{report['video_render_frames_per_s']:.0f} frames/s")


if __name__ == "__main__":
    main()
