"""Where the official MTM step's time goes: the anchor's step, op by op, beside bench_train's profile.

`../shared/anchors/official_mtm_bench.py` times the official code's own `train_one_batch`; this runs
that same script, unchanged, with its `train_one_batch` wrapped so that after the warm-up one step
counts its FLOPs (roofline.MatmulRecorder, the counter bench_train uses) and the next --profile
steps time every aten op (roofline.OpTimer). Printed in bench_train --profile's format, so the two
steps can be read line by line: which ops the official step runs that mtm's does not, and the other
way round. Nothing of the official code is copied or changed; it is imported from --repo.

Usage (OFFICIAL: a copy of github.com/facebookresearch/mtm; `pip install einops`):
  python scripts/profile_anchor.py --anchor ../shared/anchors/official_mtm_bench.py --profile 3 -- \\
      --repo OFFICIAL --data ../shared/datasets/hopper-medium-replay-v5.hdf5 --device cpu --batch 256 --threads 1 [--bf16]
  python scripts/bench_train.py --configs reference --batch-size 256 --dtypes fp32 --threads 1 --steps 4 --profile 3
"""

from __future__ import annotations

# First: bench_common makes OpenMP wait passively, which must happen before torch loads.
from bench_common import command_line, machine_info, print_header

import argparse
import importlib.util
import sys

from roofline import MatmulRecorder, format_profile, profile_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchor", required=True, help="path of official_mtm_bench.py")
    parser.add_argument("--profile", type=int, default=3, metavar="STEPS", help="steps timed op by op")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--flop-steps", type=int, default=8,
                        help="steps whose FLOPs are averaged (the official step draws one mask per batch)")
    parser.add_argument("anchor_args", nargs=argparse.REMAINDER, help="-- then the anchor's own arguments")
    args = parser.parse_args()
    command, info = command_line(), machine_info("cpu")
    anchor_args = [a for a in args.anchor_args if a != "--"]
    if "--repo" not in anchor_args:
        sys.exit("give the anchor's --repo (a copy of the official code) after --")

    spec = importlib.util.spec_from_file_location("official_mtm_bench", args.anchor)
    anchor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(anchor)
    repo = anchor_args[anchor_args.index("--repo") + 1]
    sys.path.insert(0, repo)
    anchor.install_stubs()
    import research.mtm.train as upstream  # the module whose function the anchor imports

    original = upstream.train_one_batch
    calls = {"n": 0}
    report = {}

    def wrapped(*a, **kw):
        n = calls["n"]
        calls["n"] += 1
        if n == args.warmup:  # the profile, in one go, on this call's batch and mask
            timer, wall = profile_steps(lambda: original(*a, **kw), args.profile)
            report["timer"], report["wall"] = timer, wall
        if n >= args.warmup:  # every step after the warm-up: its FLOPs (each draws its own mask)
            with MatmulRecorder() as rec:
                out = original(*a, **kw)
            report.setdefault("flops", []).append(rec.flops)
            return out
        return original(*a, **kw)

    upstream.train_one_batch = wrapped
    sys.argv = [args.anchor, *anchor_args, "--warmup", str(args.warmup), "--steps", str(args.flop_steps), "--repeats", "1",
                "--source", "tensor"]
    anchor.main()
    if "timer" not in report:
        sys.exit("the anchor ran too few steps to profile")
    print_header(info, command)
    flops = report["flops"]
    print(f"\nofficial step: {sum(flops) / len(flops) / 1e9:.2f} GFLOP a step on average over {len(flops)} steps "
          f"({min(flops) / 1e9:.1f}-{max(flops) / 1e9:.1f}: one mask a batch); {report['wall'] * 1e3:.1f} ms a step "
          f"under the op timer (train_one_batch only: no batch gathering, no mask drawing)")
    print("\n".join("  " + line for line in format_profile(report["timer"], report["wall"], args.profile, top=20)))


if __name__ == "__main__":
    main()
