"""A contact sheet of a task's scripted expert, drawn from the frames a model sees.

    python scripts/expert_contact_sheet.py --env mtm/PusherPixels2Cam-v0 --episodes 2 --output docs/images/pusher_pixels.png

Runs the expert of a pixel task (envs.tasks.TASKS) for --episodes episodes from reset seed --seed
and writes one PNG: for every episode, one row of tiles per image key of the observation (the
camera the model sees through; with two cameras, the view from above and the side view), eight
frames from the reset to the last step, each enlarged --scale times without smoothing (what a
64 x 64 frame really holds) and captioned with the step and the return so far. Unlike
``mtm eval --contact-sheet``, which renders a separate large view, these are the observations.
"""

from __future__ import annotations

# First: bench_common sets up OpenMP and MuJoCo (EGL unless chosen), before torch or MuJoCo loads.
from bench_common import parser_for

import sys
from pathlib import Path

import numpy as np

from envs.tasks import TASKS
from mtm.contact_sheet import write_contact_sheet
from mtm.data.episode import is_image
from mtm.rollout import EpisodeRunner, ExpertPolicy
from mtm.video import EpisodeFrames


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--env", default="mtm/PusherPixels-v0")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=4, help="enlarge frames this many times (default 4)")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()

    spec = TASKS.get(args.env)
    if spec is None or spec.expert is None:
        sys.exit(f"error: {args.env} has no scripted expert")
    with EpisodeRunner(args.env, min(2, args.episodes)) as runner:
        expert = ExpertPolicy.for_task(spec, runner.envs, runner.action_space)
        episodes = sorted(runner.run(expert, args.episodes, seed=args.seed), key=lambda pair: pair[0])
    rows = []
    for index, episode in episodes:
        keys = sorted(k for k, v in episode.observations.items() if is_image(v))
        if not keys:
            sys.exit(f"error: {args.env} observations hold no frames")
        returns = np.concatenate([[0.0], np.cumsum(episode.rewards)])
        for key in keys:
            frames = [np.kron(frame, np.ones((args.scale, args.scale, 1), dtype=np.uint8))
                      for frame in episode.observations[key]]
            rows.append(EpisodeFrames(index=episode.seed, frames=frames, returns=returns))
        print(f"episode {index} (seed {episode.seed}): return {episode.episode_return:.2f}, rows {', '.join(keys)}")
    write_contact_sheet(args.output, rows, columns=8)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
