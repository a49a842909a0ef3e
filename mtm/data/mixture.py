"""Training on several datasets at once, and on episodes that lack actions or rewards.

`load_training_data` (what `mtm train` and `mtm eval --task` read) splits each file into train and
validation episodes on its own, so a small labelled file keeps its share of training episodes, then
joins them; ``source_index`` says which file every training episode came from. With one file it is
exactly `load_trajectories` followed by `Trajectories.split`. Files may differ in which modalities
their episodes carry (`Trajectories.present`), not in what the shared ones are: the same
observation keys, the same state size and, where both have actions, the same action size.

`parse_drop` and `drop_plan` make such data from complete data (`mtm convert --drop`): which
episodes lose their actions or rewards, repeatably.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mtm.data.episode import OPTIONAL_MODALITIES
from mtm.data.formats import DataSource
from mtm.data.trajectories import Trajectories, load_trajectories
from mtm.errors import ConfigError, DataError


@dataclass
class TrainingData:
    """The data of a run: everything, and its train / validation parts (episodes of all files)."""

    data: Trajectories
    train: Trajectories
    val: Trajectories
    source_index: np.ndarray  # (E_train,) int64: the file each training episode came from
    sources: list[DataSource]  # every file, in order, with the format it was read as

    @property
    def paths(self) -> list[str]:
        return [source.path for source in self.sources]


def load_training_data(paths: Sequence[str | os.PathLike], *, format: str | None = None,
                       rtg: str = "average", gamma: float = 0.99, rtg_horizon: int = 1000,
                       val_fraction: float = 0.1, split_seed: int = 0,
                       only_with: Sequence[str] = ()) -> TrainingData:
    """Read, check, split (each file on its own, same seed) and join the datasets at `paths`.
    ``only_with`` keeps only the episodes that carry those modalities ("actions", "rewards"), after
    the split, so the held-out episodes are the same as without it."""
    if not paths:
        raise ConfigError("no dataset given: pass --data PATH")
    unknown = [m for m in only_with if m not in OPTIONAL_MODALITIES]
    if unknown:
        raise ConfigError(f"data.only_with: {unknown} cannot be absent; choose among {', '.join(OPTIONAL_MODALITIES)}")
    sources = [DataSource.resolve(p, format) for p in paths]
    parts = [load_trajectories(s, rtg=rtg, gamma=gamma, rtg_horizon=rtg_horizon) for s in sources]
    check_compatible(parts, [str(p) for p in paths])
    trains, vals = [], []
    for part in parts:
        train, val = part.split(val_fraction, split_seed)
        trains.append(train.only_with(only_with))
        vals.append(val.only_with(only_with))
    if len(parts) == 1:
        data, train, val = parts[0], trains[0], vals[0]
    else:
        data, train, val = concat(parts), concat(trains), concat(vals)
    if train.num_episodes == 0:
        raise DataError(f"no training episode has {' and '.join(only_with)} (data.only_with)")
    source_index = np.repeat(np.arange(len(trains), dtype=np.int64), [t.num_episodes for t in trains])
    return TrainingData(data=data, train=train, val=val, source_index=source_index, sources=sources)


def check_compatible(parts: Sequence[Trajectories], names: Sequence[str]) -> None:
    """One DataError line if the datasets cannot be trained on together."""
    first, where = parts[0], names[0]
    for part, name in zip(parts[1:], names[1:]):
        if part.state_keys != first.state_keys:
            shared = sorted(set(part.state_keys) & set(first.state_keys))
            detail = (f"shares no observation key with {where} ({', '.join(first.state_keys)})" if not shared else
                      f"has observation keys {', '.join(part.state_keys)}, {where} has {', '.join(first.state_keys)}")
            raise DataError(f"{name}: {detail}; datasets trained together must observe the same things "
                            f"(same robot, same observation keys)")
        if part.state_dim != first.state_dim:
            raise DataError(f"{name}: states have {part.state_dim} dimensions, {where} has {first.state_dim}; "
                            f"datasets trained together must come from the same robot")
        a, b = part.action_dim, first.action_dim
        if part.present["actions"].any() and first.present["actions"].any() and a != b:
            raise DataError(f"{name}: actions have {a} dimensions, {where} has {b}; "
                            f"datasets trained together must come from the same robot")
        if part.rtg != first.rtg:  # one config reads all of them, so only a bug gets here
            raise DataError(f"{name}: return-to-go settings differ from {where}'s")
    if not any(part.present["actions"].any() for part in parts):
        listed = ", ".join(names)
        raise DataError(f"{listed}: no episode has actions; MTM needs at least a few labelled episodes to "
                        f"learn a policy (add a file with actions: mtm train --data LABELLED --data {names[0]})")


def concat(parts: Sequence[Trajectories]) -> Trajectories:
    """Episodes of every part, back to back, in order. Parts without any actions may have a
    placeholder action width (0 when their file did not say): their zeros are widened to the others'."""
    action_dim = next((p.action_dim for p in parts if p.present["actions"].any()), parts[0].action_dim)

    def widened(arr: np.ndarray, key: str) -> np.ndarray:
        if key == "actions" and arr.shape[1] != action_dim:
            return np.zeros((arr.shape[0], action_dim), arr.dtype)  # they are all absent anyway
        return arr

    lengths = np.concatenate([p.lengths for p in parts])
    return Trajectories(
        arrays={key: np.concatenate([widened(p.arrays[key], key) for p in parts]) for key in parts[0].arrays},
        starts=np.cumsum(lengths) - lengths, lengths=lengths, info=parts[0].info,
        state_keys=list(parts[0].state_keys), rtg=dict(parts[0].rtg),
        episode_ids=np.concatenate([p.episode_ids for p in parts]),
        image_keys=list(parts[0].image_keys),  # so that training can refuse them (one file only)
        present={m: np.concatenate([p.present[m] for p in parts]) for m in OPTIONAL_MODALITIES},
    )


def parse_drop(text: str) -> tuple[str, float]:
    """`mtm convert --drop`: "actions" -> ("actions", 1.0); "actions:0.95" -> ("actions", 0.95)."""
    name, _, fraction = text.partition(":")
    name = name.strip()
    if name not in OPTIONAL_MODALITIES:
        raise ConfigError(f"--drop {text}: can drop {' or '.join(OPTIONAL_MODALITIES)}, not {name!r} "
                          f"(observations are what every episode keeps)")
    try:
        value = float(fraction) if fraction.strip() else 1.0
    except ValueError:
        raise ConfigError(f"--drop {text}: the fraction must be a number in [0, 1], e.g. actions:0.95") from None
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"--drop {text}: the fraction must lie in [0, 1], got {value}")
    return name, value


def drop_plan(num_episodes: int, drops: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """{modality: (E,) bool, True = drop it from that episode}: round(fraction · E) whole episodes
    per modality, drawn from numpy.random.default_rng([seed, modality's index]), so the same
    (E, fraction, seed) always drops the same episodes, and actions and rewards are drawn apart."""
    plan = {}
    for name, fraction in drops.items():
        chosen = np.random.default_rng([seed, OPTIONAL_MODALITIES.index(name)]).permutation(num_episodes)
        flags = np.zeros(num_episodes, bool)
        flags[chosen[: int(round(fraction * num_episodes))]] = True
        plan[name] = flags
    return plan


def labelled_first(train: Trajectories) -> tuple[Trajectories, np.ndarray]:
    """The episodes with actions first, then those without, and the group of each (0 = with actions,
    1 = without): two sources a sampler can weight (data.action_share), so a few labelled episodes
    among many state-only ones still fill a chosen share of every batch."""
    lacking = ~train.has("actions")
    order = np.argsort(lacking, kind="stable")
    if not lacking.any() or lacking.all():
        which = "every" if not lacking.any() else "no"
        raise ConfigError(f"data.action_share needs training episodes with and without actions; {which} training "
                          "episode has actions (leave data.action_share null)")
    return train.select(order), lacking[order].astype(np.int64)

