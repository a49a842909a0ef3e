"""Benchmark video frame rendering: what each of MuJoCo's effects costs, and mtm's presets.

Settings, each rendering --size x --size RGB frames of one env stepped with random actions:

  before: env.render()   gymnasium's rgb_array render of an env made with width = height = size:
                         how `mtm eval --video` drew frames before mtm.video (MuJoCo's defaults:
                         shadows, reflections, 4x anti-aliasing, skybox; fixed camera)
  nice                   mtm.video.RobotRenderer, preset "nice" (the same effects, follow camera)
  nice - shadows         "nice" without shadows; likewise - reflections, - anti-aliasing
  fast                   preset "fast" (the default): no shadows, reflections or anti-aliasing
  fast - skybox          "fast" without the skybox as well (not a preset: the sky turns black)
  encode mp4             mtm.video.write_video of all frames a round drew (imageio's ffmpeg,
                         libx264 preset veryfast; ffmpeg's start-up included)
  encode mp4, before     the same frames as the encoder wrote them before (x264's default preset)

Only the render call (or the encoding) is timed, not the simulation. Every round renders --frames
frames with every setting and encodes the frames the last round drew, interleaved
(bench_common.interleave); the table gives the median frames/s over rounds with the min-max range,
and each setting's speed-up over "before".

Usage:
  MUJOCO_GL=egl python scripts/bench_video.py
  MUJOCO_GL=egl python scripts/bench_video.py --env Hopper-v5 --size 256 --frames 40 --rounds 5 --json out.json
"""

from __future__ import annotations

# First: bench_common sets up OpenMP and MuJoCo (EGL unless chosen), before torch or MuJoCo loads.
from bench_common import (
    add_rounds, command_line, interleave, machine_info, parser_for, print_header, print_table, write_json,
)

import collections
import dataclasses
import tempfile
import time
from pathlib import Path

from mtm.video import QUALITIES, EpisodeFrames, RobotRenderer, write_video

NICE, FAST = QUALITIES["nice"], QUALITIES["fast"]
SETTINGS = {
    "before: env.render()": None,
    "nice": NICE,
    "nice - shadows": dataclasses.replace(NICE, shadows=False),
    "nice - reflections": dataclasses.replace(NICE, reflections=False),
    "nice - anti-aliasing": dataclasses.replace(NICE, multisamples=0),
    "fast": FAST,
    "fast - skybox": dataclasses.replace(FAST, skybox=False),
}
ENCODERS = ("encode mp4", "encode mp4, before")


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=30, help="frames per setting per round")
    add_rounds(parser, rounds=3, warmup=1)
    args = parser.parse_args()

    import gymnasium as gym
    import imageio.v2 as imageio

    command, info = command_line(), machine_info()
    env = gym.make(args.env, render_mode="rgb_array", width=args.size, height=args.size)
    env.reset(seed=0)
    env.action_space.seed(0)
    renderers = {name: RobotRenderer(env, args.size, q) for name, q in SETTINGS.items() if q is not None}
    draw = {name: r.render for name, r in renderers.items()}
    draw["before: env.render()"] = env.render
    # What the encoders encode: the frames of one round, the most recent ones drawn.
    frames: collections.deque = collections.deque(maxlen=len(SETTINGS) * args.frames)

    def render(name: str) -> float:
        """Frames/s of the render calls alone (the env steps between them are not timed)."""
        seconds = 0.0
        for _ in range(args.frames):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
            begin = time.perf_counter()
            frames.append(draw[name]().copy())
            seconds += time.perf_counter() - begin
        return args.frames / seconds

    with tempfile.TemporaryDirectory() as tmp:
        def encode(name: str) -> float:
            shown = list(frames)
            begin = time.perf_counter()
            if name == "encode mp4":
                write_video(Path(tmp) / "v.mp4", [EpisodeFrames(0, shown)], fps=30)
            else:  # x264's default preset, as the encoder wrote videos before
                imageio.mimsave(Path(tmp) / "before.mp4", shown, fps=30, macro_block_size=1)
            return len(shown) / (time.perf_counter() - begin)

        cases = {name: (lambda name=name: render(name)) for name in SETTINGS}
        cases.update({name: (lambda name=name: encode(name)) for name in ENCODERS})
        rates = interleave(cases, args.rounds, args.warmup)
    for renderer in renderers.values():
        renderer.close()
    env.close()

    base = rates["before: env.render()"].median
    print_header(info, command)
    print(f"{args.env}, {args.size}x{args.size} px, {args.frames} frames x {args.rounds} rounds after "
          f"{args.warmup} warm-up round(s)\n")
    table, results = [], []
    for name, r in rates.items():
        ratio = None if name in ENCODERS else r.median / base
        table.append([name, f"{r.median:.1f}", r.spread(".1f"), f"{ratio:.1f}x" if ratio is not None else "–"])
        results.append({"setting": name, "frames_per_s": list(r), "median": r.median, "vs_before": ratio})
    print_table(["setting", "frames/s (median)", "min-max", "vs before"], table, align="l")
    pairs = (("before: env.render()", "encode mp4, before"), ("nice", "encode mp4"), ("fast", "encode mp4"))
    for name, encoder in pairs:
        seconds = 1000 / rates[name].median + 1000 / rates[encoder].median
        print(f"a 1000-frame video, {name}: {seconds:.1f} s of drawing and encoding")
    write_json(args.json, {"command": command, "machine": info, "env": args.env, "size": args.size,
                           "frames": args.frames, "rounds": args.rounds, "results": results})


if __name__ == "__main__":
    main()
