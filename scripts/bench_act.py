"""A policy step's network call at fp32 and bf16, by number of envs, for the built-in configs: where
`precision: auto` should switch (mtm.hardware.CPU_BF16_MIN_WORK, TokenModel.inference_work).

State configs (random init, Hopper-v5's dimensions): `MTMPolicy.act` for K envs at steady state (a
full window), fp32 against bf16 autocast. Image configs (pixels, cnn-bc; a few ReacherPixels expert
episodes collected first): `model.predict` of K windows drawn from them, with the policy's view.
Side by side in one process, rounds in rotating order (bench_common.interleave), medians; the
last column says what `auto` picks for that K.

Usage:
  python scripts/bench_act.py                                       # mlp-bc, mlp-rcbc, small, cnn-bc, pixels
  python scripts/bench_act.py --configs small,reference --envs 1,10,100,1000
"""

from __future__ import annotations

# First: bench_common sets up OpenMP and MuJoCo, which must happen before torch or MuJoCo loads.
from bench_common import (
    add_rounds, command_line, interleave, machine_info, minimal_metadata, parser_for, print_header, print_table,
    split_list, steady_policy, write_json,
)

import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from bench_auto import IMAGE_CONFIGS, PIXEL_ENV, collect
from bench_train import build_group, load_data
from mtm.config import RunConfig, load_config, resolve_config_path
from mtm.hardware import resolve_precision
from mtm.model.build import build_model
from mtm.model.masks import POLICY_MASKS
from mtm.model.tokenizers import ContinuousTokenizer


def state_calls(name: str, k: int) -> dict:
    """{dtype: one act() of K envs} for a random-init model of config `name` on Hopper's dimensions."""
    cfg = load_config(RunConfig, resolve_config_path(name))
    toks = {"states": ContinuousTokenizer(11, np.zeros(11), np.ones(11), name="states"),
            "returns": ContinuousTokenizer(1, [0.0], [1.0], name="returns"),
            "actions": ContinuousTokenizer(3, np.zeros(3), np.ones(3), name="actions")}
    torch.manual_seed(0)
    model = build_model(cfg.model, toks, cfg.data.window).eval()
    meta = minimal_metadata(gym.make("Hopper-v5").action_space)
    obs = np.zeros((k, 11), np.float32)
    policies = {p: steady_policy(model, meta, obs, precision=p) for p in ("fp32", "bf16")}
    auto = steady_policy(model, meta, obs, precision="auto").precision.dtype
    return {"calls": {p: (lambda pol=pol: pol.act(obs)) for p, pol in policies.items()}, "auto": auto}


def image_calls(name: str, k: int, data: Path) -> dict:
    """{dtype: one model.predict of K windows with the bc view} for config `name` on `data`."""
    cfg = load_config(RunConfig, resolve_config_path(name), [f"data.path={data}"])
    group = build_group(name, cfg, k, load_data(cfg, torch.device("cpu")), torch.device("cpu"))
    model = group.model.eval()
    batch = group.sampler.sample(k, torch.Generator().manual_seed(0))
    batch.pop("valid", None)
    view = POLICY_MASKS["bc"](model.layout, model.window - 1)
    precisions = {p: resolve_precision(p, "cpu") for p in ("fp32", "bf16")}

    def call(p: str) -> None:
        with precisions[p].autocast("cpu"):
            model.predict(batch, view, heads=("actions",))

    auto = resolve_precision("auto", "cpu", work=model.inference_work(k), warn=lambda _: None).dtype
    return {"calls": {p: (lambda p=p: call(p)) for p in precisions}, "auto": auto}


def main() -> None:
    parser = parser_for(__doc__)
    parser.add_argument("--configs", default="mlp-bc,mlp-rcbc,small,cnn-bc,pixels")
    parser.add_argument("--envs", default="1,10,100", help="numbers of envs (windows) per call")
    parser.add_argument("--calls", type=int, default=200, help="about this many windows' worth of calls a round")
    add_rounds(parser, rounds=8, warmup=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    command, info = command_line(), machine_info("cpu")
    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        data = None
        for name in split_list(args.configs):
            for k in split_list(args.envs, int):
                if name in IMAGE_CONFIGS:
                    data = data or collect(PIXEL_ENV, 10, Path(tmp) / "pixels.hdf5")
                    setting = image_calls(name, k, data)
                else:
                    setting = state_calls(name, k)
                repeat = max(1, args.calls // k)

                def timed(fn, n=repeat):
                    begin = time.perf_counter()
                    for _ in range(n):
                        fn()
                    return (time.perf_counter() - begin) / n

                samples = interleave({p: (lambda fn=fn: timed(fn)) for p, fn in setting["calls"].items()},
                                     args.rounds, args.warmup, log=None)
                f32, b16 = samples["fp32"].median, samples["bf16"].median
                faster = "bf16" if b16 < f32 else "fp32"
                rows.append([name, k, f"{f32 * 1e3:.3f}", f"{b16 * 1e3:.3f}", f"{f32 / b16:.2f}x", setting["auto"],
                             "yes" if setting["auto"] == faster else "no"])
                records.append({"config": name, "envs": k, "fp32_s": f32, "bf16_s": b16, "auto": setting["auto"]})
                print(" | ".join(map(str, rows[-1])), flush=True)
    print_header(info, command)
    print_table(["config", "envs", "fp32 ms", "bf16 ms", "bf16 speed", "auto picks", "the faster?"], rows,
                align="lrrrrll")
    write_json(args.json, {"command": command, "machine": info, "results": records})


if __name__ == "__main__":
    main()
