"""Reference returns for normalised scores: 100 * (R - min) / (max - min).

A score is only meaningful next to the references it was normalised with, so every entry says
where its numbers come from. D4RL's constants apply to its -v2 datasets (all of a task's datasets
share one pair); the v5 entries are the shared SAC data's own references and are not comparable to
published D4RL tables (different simulator version and behaviour policies).

References can also be wrong: a dataset's metadata may carry placeholders (Minari files with 0 and
1). `choose_references` checks whichever pair would be used against the data's own mean return
(a pair that puts it far outside PLAUSIBLE_NORMALISED is suspect), falls back to this table where
it has the env, and says in one line what it did.

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
# D4RL has no v5 data. Walker2d-v5 has the same bodies, joints, gears, observation and reward as
# walker2d-v2 but both feet with friction 1.9 (v2: the left foot 0.9), so these constants are only
# an approximation for it; there is no Walker2d SAC data to measure v5's own. Ant and Humanoid get
# no entry: D4RL's ant constants are for Ant-v2, whose reward and observation differ from
# Ant-v5's (contact forces), and D4RL has no humanoid.
D4RL_FOR_V5_PROVENANCE = ("D4RL (Fu et al. 2020) walker2d-v2 constants used for v5: not measured on v5, "
                          "whose left foot has friction 1.9 (v2: 0.9); same bodies and reward")
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
    "Walker2d-v5": (*_D4RL_TASKS["walker2d"], D4RL_FOR_V5_PROVENANCE),
    "Reacher-v5": (-42.9073, -3.5517, "uniform random actions / envs.experts.ReacherExpert, mean over seeds 0..99: "
                   "python scripts/measure_references.py --env Reacher-v5 --episodes 100"),
    # Reacher-v5's dynamics with an on-target reward (1 per step with the fingertip on the target
    # disc): a target-blind policy scores like random. The expert reads the privileged target.
    "mtm/ReacherPixels-v0": (0.5000, 33.1800, "uniform random actions / envs.experts.ReacherExpert on the privileged "
                             "full Reacher-v5 observation, mean over seeds 0..99: "
                             "python scripts/measure_references.py --env mtm/ReacherPixels-v0 --episodes 100"),
    # Pusher-v5's object-goal distance term alone, -|object - goal| per step over 100 steps: a
    # policy that leaves the object where it starts scores like random. The expert reads the
    # privileged object position; it ends 97 of the 100 episodes with the object within 5 cm of the goal.
    "mtm/PusherPixels-v0": (-24.2537, -17.1349, "uniform random actions / envs.experts.PusherExpert on the privileged "
                            "simulator state, mean over seeds 0..99: "
                            "python scripts/measure_references.py --env mtm/PusherPixels-v0 --episodes 100"),
})
# The same task seen by one more camera: the same dynamics, resets and expert, so the same returns.
REFERENCE_SCORES["mtm/PusherPixels2Cam-v0"] = REFERENCE_SCORES["mtm/PusherPixels-v0"]


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


# Normalised mean returns outside this range are suspect: a random policy scores about 0 and an
# expert about 100 by construction; a dataset far outside was normalised with the wrong pair.
PLAUSIBLE_NORMALISED = (-50.0, 200.0)


def check_references(ref_min: float, ref_max: float, mean_return: float | None) -> str | None:
    """Why (ref_min, ref_max) cannot be right for data whose mean episode return is `mean_return`,
    or None when nothing is wrong (or there is no return to check against)."""
    if not ref_max > ref_min:
        return f"min {ref_min:g} is not below max {ref_max:g}"
    if mean_return is None:
        return None
    score = normalized_score(mean_return, ref_min, ref_max)
    low, high = PLAUSIBLE_NORMALISED
    if low <= score <= high:
        return None
    return (f"{ref_min:g} .. {ref_max:g} put the data's mean return {mean_return:.1f} at {score:.1f} "
            f"normalised (outside {low:g} .. {high:g})")


def choose_references(own: tuple[float, float] | None, own_source: str, env_id: str | None,
                      mean_return: float | None) -> dict | None:
    """The references to normalise with: {"min", "max", "source"}, plus "warning" (one line) when
    they are suspect or replace suspect ones. `own`: the dataset's pair, described by `own_source`;
    mtm's table (by `env_id`) is the fallback. `mean_return`: the data's mean episode return (None:
    no rewards, nothing to check). None when neither source has references."""
    table = reference_entry(env_id)
    if own is not None:
        problem = check_references(own[0], own[1], mean_return)
        chosen = {"min": float(own[0]), "max": float(own[1]), "source": own_source}
        if problem is None:
            return chosen
        suspect = f"the references of {own_source} look wrong: {problem}"
        if table is not None:
            also = check_references(table[0], table[1], mean_return)
            return {"min": table[0], "max": table[1], "source": table[2],
                    "warning": f"{suspect}; normalising with mtm's table for {env_id} instead ({table[2]})"
                               + (f"; these look wrong too: {also}" if also else "")}
        return {**chosen, "warning": f"{suspect}; mtm's table has no references for {env_id or 'this env'}, so "
                                     f"normalised scores use them anyway: set the right ones with "
                                     f"mtm convert --ref-min/--ref-max"}
    if table is None:
        return None
    chosen = {"min": table[0], "max": table[1], "source": table[2]}
    problem = check_references(table[0], table[1], mean_return)
    if problem is not None:
        chosen["warning"] = (f"mtm's references for {env_id} look wrong for this data: {problem}; "
                             f"is {env_id} the data's env?")
    return chosen
