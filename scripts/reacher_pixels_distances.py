"""Where a policy leaves the fingertip on mtm/ReacherPixels-v0: per episode its closest approach to the
target and its distance at the end, so a low score can be read as "never found the target" or "found
it but did not hold it on the 2 cm disc" (the reward counts steps with distance < 2 cm).

    python scripts/reacher_pixels_distances.py runs/cnn-bc/seed0 --expert --episodes 50 --seed 100 --output results/reacher_pixels_distances.json

Each checkpoint acts in mode bc (`--mode` changes it), one env, episode i reset with seed + i as
`mtm eval --seed` does; `--expert` adds the scripted expert (it reads the target from the simulator).
"""

import argparse
import json
from pathlib import Path

import numpy as np

ENV_ID = "mtm/ReacherPixels-v0"
LAST = 10  # the closing steps whose mean distance says whether the fingertip stayed


def run_episodes(act, reset, episodes: int, seed: int) -> list[dict]:
    """act(env, observation) -> action; reset() before each episode. Distances in cm."""
    from envs.pixel_reacher import TARGET_RADIUS
    from mtm.rollout import make_env

    env = make_env(ENV_ID)
    rows = []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            reset()
            dist, total, done = [], 0.0, False
            while not done:
                obs, reward, terminated, truncated, info = env.step(act(env, obs))
                dist.append(-100.0 * float(info["reward_dist"]))
                total += float(reward)
                done = terminated or truncated
            d = np.asarray(dist)
            rows.append({"seed": seed + i, "return": total, "closest_cm": float(d.min()), "final_cm": float(d[-1]),
                         f"last{LAST}_mean_cm": float(d[-LAST:].mean()),
                         "on_target_at_end": bool(d[-1] < 100.0 * TARGET_RADIUS)})
    finally:
        env.close()
    return rows


def summary(rows: list[dict]) -> dict:
    final = np.array([r["final_cm"] for r in rows])
    closest = np.array([r["closest_cm"] for r in rows])
    return {"episodes": len(rows), "return_mean": float(np.mean([r["return"] for r in rows])),
            "on_target_at_end": int(sum(r["on_target_at_end"] for r in rows)),
            "closest_below_2cm": int((closest < 2.0).sum()),
            "final_cm_quartiles": [float(q) for q in np.percentile(final, [25, 50, 75])],
            "closest_cm_quartiles": [float(q) for q in np.percentile(closest, [25, 50, 75])]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="*", help="run or checkpoint directories")
    p.add_argument("--expert", action="store_true", help="also the scripted expert")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--mode", default="bc")
    p.add_argument("--output", default=None, help="write every episode and the summaries as JSON")
    args = p.parse_args()

    from envs.experts import ReacherExpert
    from envs.pixel_reacher import reacher_observation
    from mtm.policy import MTMPolicy

    results = {}
    if args.expert:
        expert = ReacherExpert()
        results["expert"] = run_episodes(lambda env, obs: np.clip(expert(reacher_observation(env)[None])[0], -1, 1),
                                         lambda: None, args.episodes, args.seed)
    for path in args.checkpoints:
        policy = MTMPolicy.from_checkpoint(path, mode=args.mode)
        results[path] = run_episodes(lambda env, obs: policy.act({k: v[None] for k, v in obs.items()})[0],
                                     policy.reset, args.episodes, args.seed)
    report = {"env_id": ENV_ID, "seed": args.seed, "mode": args.mode,
              "summaries": {name: summary(rows) for name, rows in results.items()}, "episodes": results}
    for name, s in report["summaries"].items():
        print(f"{name}: return {s['return_mean']:.2f}, on target at the end {s['on_target_at_end']}/{s['episodes']}, "
              f"closest < 2 cm {s['closest_below_2cm']}/{s['episodes']}, final distance quartiles "
              f"{', '.join(f'{q:.1f}' for q in s['final_cm_quartiles'])} cm")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
