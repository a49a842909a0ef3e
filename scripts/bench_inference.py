"""Where a policy step's time goes on this CPU, and what evaluation at >= 50 % of the raw step rate needs.

For one env and K envs, side by side in one process (bench_common.interleave: rounds, medians):

  env step        one SyncVectorEnv.step of K envs with random actions (the raw ceiling's unit)
  act()           MTMPolicy.act (fp32) for K observations at steady state (full window, c = L - 1)
  predict fp32    the bare model.predict of that act() (bench_common.predict_call: what act()
                  spends in the network)
  predict bf16    the same weights cast to bfloat16 once (no per-call casting; AMX/AVX512-BF16
                  matmuls), tokenizers kept in fp32; the max action deviation from fp32 is printed
  predict compile torch.compile(model.forward) (inductor, CPU), after its warm-up

and the arithmetic: multiply-accumulates of one predict (every Linear layer, at the token counts the
policy's mask gives), the rate they run at, and the predict time that evaluation at half the raw rate
allows: act + step <= 2 x step, i.e. act <= step. With K envs the network's work grows with K like
the simulator's, so K does not change the ratio much; only a smaller or faster network does.

The model: a random-init MTM of the `small` config (width 128, 2 + 1 layers, L = 4, rcbc) with the
env's dimensions: speed does not depend on the weights.

Usage:
  python scripts/bench_inference.py                       # HalfCheetah-v5, Hopper-v5; K = 10
  python scripts/bench_inference.py --envs Walker2d-v5 --num-envs 1,10 --no-compile
"""

from __future__ import annotations

# First: bench_common sets up OpenMP and MuJoCo, which must happen before torch or MuJoCo loads.
from bench_common import (
    RandomStepper, add_envs, add_rounds, command_line, interleave, machine_info, median_time, minimal_metadata,
    parser_for, predict_call, print_header, print_table, random_model, split_list, steady_inputs, steady_policy,
    write_json,
)

import copy
import time
from typing import Callable

import torch

from mtm.model.network import ModelConfig


def bf16_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The network's weights in bfloat16 once; tokenizers (normalisation statistics) stay fp32 and
    the per-modality embeddings cast their inputs."""
    other = copy.deepcopy(model)
    for name, module in other.named_modules():
        if name and not name.startswith("tokenizers"):
            for p in module.parameters(recurse=False):
                p.data = p.data.to(torch.bfloat16)
    for embed in other.embed.values():
        embed.register_forward_pre_hook(lambda _m, args: (args[0].to(torch.bfloat16),))
    other.token_position = other.token_position.to(torch.bfloat16)
    return other


def linear_macs(call: Callable[[], object]) -> int:
    """Multiply-accumulates of every linear layer in one `call()`: torch.nn.functional.linear is
    wrapped for the call (nn.Linear and the attention's split q / kv projections both go through it)."""
    total = 0
    original = torch.nn.functional.linear

    def counting_linear(x, weight, bias=None):
        nonlocal total
        total += x.numel() // x.shape[-1] * weight.shape[0] * weight.shape[1]
        return original(x, weight, bias)

    torch.nn.functional.linear = counting_linear
    try:
        call()
    finally:
        torch.nn.functional.linear = original
    return total


def bench_env(env_id: str, k: int, args) -> dict:
    stepper = RandomStepper(env_id, "SyncVectorEnv", k, seed=0)
    vec = stepper.vec
    obs_dim, act_dim = vec.single_observation_space.shape[0], vec.single_action_space.shape[0]
    cfg = ModelConfig(width=128, encoder_layers=2, decoder_layers=1, heads=4)
    model = random_model(obs_dim, act_dim, cfg, 4, seed=0)
    obs, _ = vec.reset(seed=0)
    policy = steady_policy(model, minimal_metadata(vec.single_action_space), obs, mode="rcbc", precision="fp32")
    c = policy.window - 1
    low_precision = bf16_copy(model)
    actions = vec.action_space.sample()

    settings: dict[str, Callable[[], object]] = {
        "env step": lambda: vec.step(actions),
        "act()": lambda: policy.act(obs),
        "predict fp32": predict_call(policy),
        "predict bf16": predict_call(policy, low_precision),
    }
    if args.compile:
        compiled = torch.compile(model.forward)
        batch, visible, queries = steady_inputs(policy)

        def predict_compiled():
            with torch.inference_mode():
                return compiled(batch, visible, heads=("actions",), queries=queries)

        t0 = time.perf_counter()
        predict_compiled()
        print(f"  {env_id} K={k}: torch.compile warm-up {time.perf_counter() - t0:.1f} s", flush=True)
        settings["predict compile"] = predict_compiled

    fp32 = settings["predict fp32"]()["actions"][:, c]
    bf16 = settings["predict bf16"]()["actions"][:, c].float()
    rounds = interleave({name: (lambda fn=fn: median_time(fn, args.calls)) for name, fn in settings.items()},
                        args.rounds, args.warmup, log=None)
    medians = {name: r.median * 1e6 for name, r in rounds.items()}
    macs = linear_macs(settings["predict fp32"])
    step_us, predict_us = medians["env step"], medians["predict fp32"]
    stepper.close()
    return {
        "env": env_id, "num_envs": k, "us": {n: round(v, 1) for n, v in medians.items()},
        "ranges_us": {n: [round(r.low * 1e6, 1), round(r.high * 1e6, 1)] for n, r in rounds.items()},
        "raw_steps_per_s": round(k / step_us * 1e6),
        "eval_over_raw_estimate": round(step_us / (step_us + medians["act()"]), 3),
        "predict_macs": macs,
        "predict_gmac_per_s": round(macs / predict_us / 1e3, 1),
        "predict_budget_us_for_half_rate": round(step_us - (medians["act()"] - predict_us), 1),
        "bf16_max_action_deviation": float((bf16 - fp32).abs().max()),
        "model_parameters": model.num_parameters(),
    }


def main() -> None:
    parser = parser_for(__doc__)
    add_envs(parser, "HalfCheetah-v5,Hopper-v5", num_envs="10")
    parser.add_argument("--calls", type=int, default=100, help="calls per setting and round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    add_rounds(parser, rounds=5, warmup=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command, info = command_line(), machine_info()
    results = [bench_env(e, k, args) for e in split_list(args.envs) for k in split_list(args.num_envs, int)]
    print_header(info, command)
    table = []
    for r in results:
        us = r["us"]
        table.append([r["env"], r["num_envs"], f"{us['env step']:,.0f}", f"{us['act()']:,.0f}",
                      f"{us['predict fp32']:,.0f}", f"{us['predict bf16']:,.0f}",
                      f"{us.get('predict compile', float('nan')):,.0f}", f"{r['predict_macs'] / 1e6:.1f}",
                      r["predict_gmac_per_s"], f"{r['predict_budget_us_for_half_rate']:,.0f}",
                      f"{r['eval_over_raw_estimate']:.2f}"])
    print_table(["env", "K", "env step µs", "act() µs", "predict fp32 µs", "bf16 weights µs", "compile µs",
                 "predict MMAC", "GMAC/s", "predict budget for 0.5 µs", "eval/raw (est.)"], table, align="l")
    print(f"\nbf16 weights: max action deviation from fp32 {max(r['bf16_max_action_deviation'] for r in results):.1e}")
    write_json(args.json, {"command": command, "machine": info, "results": results})


if __name__ == "__main__":
    main()
