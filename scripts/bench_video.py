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

Only the render call (or the encoding) is timed, not the simulation. Timing is interleaved: every
round renders --frames frames with every setting, in an order that rotates from round to round, so a
background load on a shared machine hits all settings alike; the table gives the median frames/s over
rounds with the min-max range, and each setting's speed-up over "before".

Usage:
  MUJOCO_GL=egl python scripts/bench_video.py
  MUJOCO_GL=egl python scripts/bench_video.py --env Hopper-v5 --size 256 --frames 40 --rounds 5 --json out.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (and its OpenMP) is loaded
os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is loaded

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from bench_common import loadavg, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtm.video import QUALITIES, EpisodeFrames, RobotRenderer, write_video  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=30, help="frames per setting per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    import gymnasium as gym
    import imageio.v2 as imageio

    info = machine_info(mujoco_gl=os.environ.get("MUJOCO_GL"))
    env = gym.make(args.env, render_mode="rgb_array", width=args.size, height=args.size)
    env.reset(seed=0)
    env.action_space.seed(0)
    renderers = {name: RobotRenderer(env, args.size, q) for name, q in SETTINGS.items() if q is not None}
    draw = {name: r.render for name, r in renderers.items()}
    draw["before: env.render()"] = env.render
    rates: dict[str, list[float]] = {name: [] for name in [*SETTINGS, "encode mp4", "encode mp4, before"]}
    for name in draw:  # warm-up: the first frame of a context sets up buffers and textures
        draw[name]()
    names = list(draw)
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[:r % len(names)]
            frames = []
            for name in order:
                seconds = 0.0
                for _ in range(args.frames):
                    _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                    if terminated or truncated:
                        env.reset()
                    begin = time.perf_counter()
                    frames.append(draw[name]().copy())
                    seconds += time.perf_counter() - begin
                rates[name].append(args.frames / seconds)
            begin = time.perf_counter()
            write_video(Path(tmp) / "v.mp4", [EpisodeFrames(0, frames)], fps=30)
            rates["encode mp4"].append(len(frames) / (time.perf_counter() - begin))
            begin = time.perf_counter()
            imageio.mimsave(Path(tmp) / "before.mp4", frames, fps=30, macro_block_size=1)
            rates["encode mp4, before"].append(len(frames) / (time.perf_counter() - begin))
    for renderer in renderers.values():
        renderer.close()
    env.close()

    base = statistics.median(rates["before: env.render()"])
    print(f"# {args.env}, {args.size}x{args.size} px, {args.frames} frames x {args.rounds} rounds; "
          f"{info['cpu']}, {info['cpu_cores_visible']} cores, {info['cpu_capability']}, "
          f"MUJOCO_GL={info['mujoco_gl']}, mujoco {info.get('mujoco')}, load {info['loadavg_start']} -> {loadavg()}")
    print("| setting | frames/s (median) | min-max | vs before |")
    print("|---|---|---|---|")
    results = []
    for name, values in rates.items():
        median = statistics.median(values)
        ratio = None if name.startswith("encode") else median / base
        print(f"| {name} | {median:.1f} | {min(values):.1f}-{max(values):.1f} | "
              + (f"{ratio:.1f}x |" if ratio is not None else "– |"))
        results.append({"setting": name, "frames_per_s": values, "median": median, "vs_before": ratio})
    for name, encoder in (("before: env.render()", "encode mp4, before"), ("nice", "encode mp4"), ("fast", "encode mp4")):
        seconds = 1000 / statistics.median(rates[name]) + 1000 / statistics.median(rates[encoder])
        print(f"a 1000-frame video, {name}: {seconds:.1f} s of drawing and encoding")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": " ".join(shlex.quote(a) for a in sys.argv), "machine": info, "env": args.env,
            "size": args.size, "frames": args.frames, "rounds": args.rounds, "results": results,
            "loadavg_end": loadavg()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
