"""Reference returns for normalised scores: 100 * (R - min) / (max - min).

A score is only meaningful next to the references it was normalised with, so every entry says
where its numbers come from. D4RL's constants apply to its -v2 datasets (all of a task's datasets
share one pair); the v5 entries are the shared SAC data's own references and are not comparable to
published D4RL tables (different simulator version and behaviour policies).

This module imports nothing from mtm so that data readers, evaluation and envs can all use it.
"""

from __future__ import annotations

D4RL_PROVENANCE = "D4RL (Fu et al. 2020) v2 constants: random policy / expert reference"
SHARED_PROVENANCE = "mtm shared SAC data: random / best snapshot, 100 episodes"

_D4RL_TASKS = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
}
_D4RL_DATASETS = ("random", "medium", "medium-replay", "medium-expert", "expert", "full-replay")

# id -> (min, max, provenance). Keys are gymnasium env ids or D4RL dataset ids.
REFERENCE_SCORES: dict[str, tuple[float, float, str]] = {
    f"{task}-{dataset}-v2": (low, high, D4RL_PROVENANCE)
    for task, (low, high) in _D4RL_TASKS.items()
    for dataset in _D4RL_DATASETS
}
REFERENCE_SCORES.update({
    "Hopper-v5": (17.851924213960523, 3020.087533227552, SHARED_PROVENANCE),
    "HalfCheetah-v5": (-280.1371942266411, 6256.566622416655, SHARED_PROVENANCE),
    "Reacher-v5": (-42.9073, -3.5517, "uniform random actions / envs.experts.ReacherExpert, mean over seeds 0..99: "
                   "python scripts/measure_references.py --env Reacher-v5 --episodes 100"),
    # Reacher-v5's dynamics with an on-target reward (1 per step with the fingertip on the target
    # disc): a target-blind policy scores like random. The expert reads the privileged target.
    "mtm/ReacherPixels-v0": (0.5000, 33.1800, "uniform random actions / envs.experts.ReacherExpert on the privileged "
                             "full Reacher-v5 observation, mean over seeds 0..99: "
                             "python scripts/measure_references.py --env mtm/ReacherPixels-v0 --episodes 100"),
})


def reference_entry(env_id: str | None) -> tuple[float, float, str] | None:
    """(min, max, provenance) for an env or dataset id, or None when mtm knows no references."""
    if not env_id:
        return None
    if env_id in REFERENCE_SCORES:
        return REFERENCE_SCORES[env_id]
    # D4RL ids are written both ways in the wild: "hopper-medium-replay-v2" (the gym id) and
    # "hopper_medium_replay-v2" (the download's file name).
    return REFERENCE_SCORES.get(env_id.lower().replace("_", "-"))


def reference_scores(env_id: str | None) -> tuple[float, float] | None:
    """(min, max) reference returns for an env or dataset id, or None when unknown."""
    entry = reference_entry(env_id)
    return None if entry is None else (entry[0], entry[1])


def normalized_score(episode_return: float, ref_min: float, ref_max: float) -> float:
    return 100.0 * (episode_return - ref_min) / (ref_max - ref_min)
