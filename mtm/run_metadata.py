"""What a checkpoint carries besides its weights, typed: `RunMetadata`, saved as metadata.json.

mtm.training.metadata builds it once per run; every checkpoint the run saves writes `to_dict()`
(mtm.checkpoint adds format, format_version, step, mtm_version, torch_version and created: the
HEADER_KEYS). Policies, `mtm eval` and a resumed run read it back with `from_dict` and use its
fields, so the JSON keys below are written and read here alone. Renaming one breaks the
checkpoints already saved; a key an older mtm did not write gets the default that mtm read it as
(tests/test_old_checkpoints.py loads a 0.1.0 checkpoint), and a top-level key this mtm does not
know is kept in `extra`, so a round trip keeps it (inside data_info and rtg, only the known
fields are read).

    env_id        the dataset's env id                  evaluation.rollouts (the default env)
    dataset       identity of data.path (path, kind,    training.run_data (a resume must read the
                  size, sha256)                         same bytes), evaluation.predictions (where
    datasets      identities of every file, written     the data was), evaluation.rollouts (report)
                  only with data.extra_paths            -> `datasets`, always a list
    data_info     source_format, source, ref_min_score, evaluation.rollouts (normalised scores; the
                  ref_max_score, observation_space,     env is made with pixel observations),
                  action_space {low, high}, pixels,     policy.MTMPolicy (clips actions)
                  reset_seeds
                  -> `DataSummary`
    state_keys    observation keys, in order            policy.MTMPolicy
    image_keys    image keys tokenized                  policy.MTMPolicy
    rtg           return-to-go kind, gamma, horizon     policy.MTMPolicy (counts down its target)
                  -> `ReturnToGo`
    stats         per-modality statistics of the train  evaluation.predictions (the baseline of
                  split -> `ModalityStats`              prediction errors)
    returns       {} without rewards; else              policy.MTMPolicy (the target return:
                  episode_return {min, mean, max,       typical_max, outliers_above, or a fraction
                  typical_max, outliers_above},         of min..max)
                  rtg_token {min, max} -> `ReturnSummary` or None
    split         val_fraction, seed, train/val_episodes scripts/bench_heteromodal.py
                  (and *_episodes_with per modality
                  when episodes lack some)
    model         the model's spec, tokenizers included policy.load_model, training.loop (resume)
    runtime       device, world_size, precision, CPU    (for people; shown at the start of a run)
                  kernel and threads
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mtm.data.episode import STATE_KEY
from mtm.data.stats import ModalityStats
from mtm.errors import DataError

#: Written by mtm.checkpoint.save_checkpoint itself, not part of the run's metadata.
HEADER_KEYS = frozenset({"format", "format_version", "step", "mtm_version", "torch_version", "created"})


@dataclass(frozen=True)
class DataSummary:
    """What the training data said about itself (JSON "data_info")."""

    source_format: str | None = None
    source: str | None = None
    ref_min_score: float | None = None  # return of the "random" reference, for normalised scores
    ref_max_score: float | None = None  # return of the "expert" reference
    observation_space: dict[str, Any] | None = None  # mtm.data.spaces.space_to_dict
    action_space: dict[str, Any] | None = None
    pixels: dict[str, Any] | None = None  # how `mtm collect` rendered frames (mtm.rollout.PixelSpec), if it did
    # The reset seeds `mtm collect` started the episodes from, as inclusive [first, last] ranges
    # (None: not known, e.g. a D4RL file): `mtm eval` warns when its own seeds fall among them.
    reset_seeds: list[list[int]] | None = None


@dataclass(frozen=True)
class ReturnToGo:
    """How the return tokens were made (mtm.data.returns). Checkpoints without it read as sum."""

    kind: str = "sum"
    gamma: float = 1.0
    horizon: int = 1000
    include_current_reward: bool = True


@dataclass(frozen=True)
class ReturnSummary:
    """The training episodes' returns (those with rewards), from which a policy picks its target."""

    min: float
    mean: float
    max: float
    typical_max: float  # the best return that is not an outlier (older checkpoints: the best)
    outliers_above: int  # training returns above typical_max
    rtg_token_min: float | None = None  # the range of the return tokens (for people)
    rtg_token_max: float | None = None


@dataclass(frozen=True)
class RunMetadata:
    env_id: str | None = None
    datasets: list[dict[str, Any]] = field(default_factory=list)  # identity of data.path, then data.extra_paths
    data_info: DataSummary = field(default_factory=DataSummary)
    state_keys: list[str] = field(default_factory=lambda: [STATE_KEY])
    image_keys: list[str] = field(default_factory=list)
    rtg: ReturnToGo = field(default_factory=ReturnToGo)
    stats: dict[str, ModalityStats] = field(default_factory=dict)
    returns: ReturnSummary | None = None  # None: no training episode had rewards
    split: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None  # mtm.model.build.model_from_spec rebuilds the model from it
    runtime: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this mtm does not know, kept as they were

    @property
    def dataset(self) -> dict[str, Any]:
        """The identity of data.path ({} in metadata that names no dataset)."""
        return self.datasets[0] if self.datasets else {}

    def replace(self, **changes: Any) -> "RunMetadata":
        return dataclasses.replace(self, **changes)

    # ---- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON object metadata.json holds (without mtm.checkpoint's HEADER_KEYS), key for key
        what mtm has always written."""
        out: dict[str, Any] = {"env_id": self.env_id, "dataset": self.dataset}
        if len(self.datasets) > 1:
            out["datasets"] = list(self.datasets)
        out.update({
            # Unknown reset seeds are left out: the JSON stays what older mtm wrote and read.
            "data_info": {k: v for k, v in dataclasses.asdict(self.data_info).items()
                          if not (k == "reset_seeds" and v is None)},
            "state_keys": list(self.state_keys),
            "image_keys": list(self.image_keys),
            "rtg": dataclasses.asdict(self.rtg),
            "stats": {name: s.to_dict() for name, s in self.stats.items()},
            "returns": _returns_to_dict(self.returns),
            "split": dict(self.split),
            "model": self.model,
        })
        if self.runtime is not None:
            out["runtime"] = self.runtime
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunMetadata":
        """Read metadata.json's object (header keys are ignored), from any mtm version."""
        if not isinstance(data, dict):
            raise DataError(f"checkpoint metadata must be a JSON object, got {type(data).__name__}")
        known = {"env_id", "dataset", "datasets", "data_info", "state_keys", "image_keys", "rtg", "stats",
                 "returns", "split", "model", "runtime"}
        datasets = data.get("datasets") or ([data["dataset"]] if data.get("dataset") else [])
        return cls(
            env_id=data.get("env_id"),
            datasets=[dict(d) for d in datasets],
            data_info=_known_fields(DataSummary, data.get("data_info")),
            state_keys=list(data.get("state_keys") or [STATE_KEY]),
            image_keys=list(data.get("image_keys") or []),
            rtg=_known_fields(ReturnToGo, data.get("rtg")),
            stats={name: ModalityStats.from_dict(s) for name, s in (data.get("stats") or {}).items()},
            returns=_returns_from_dict(data.get("returns")),
            split=dict(data.get("split") or {}),
            model=data.get("model"),
            runtime=data.get("runtime"),
            extra={k: v for k, v in data.items() if k not in known and k not in HEADER_KEYS},
        )


def _known_fields(kind: type, data: dict[str, Any] | None) -> Any:
    """`kind` from the keys of `data` it has fields for (missing ones take their defaults)."""
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in (data or {}).items() if k in names})


def _returns_to_dict(returns: ReturnSummary | None) -> dict[str, Any]:
    if returns is None:
        return {}
    out: dict[str, Any] = {"episode_return": {"min": returns.min, "mean": returns.mean, "max": returns.max,
                                              "typical_max": returns.typical_max,
                                              "outliers_above": returns.outliers_above}}
    if returns.rtg_token_min is not None:
        out["rtg_token"] = {"min": returns.rtg_token_min, "max": returns.rtg_token_max}
    return out


def _returns_from_dict(data: dict[str, Any] | None) -> ReturnSummary | None:
    seen = (data or {}).get("episode_return")
    if not seen:
        return None
    token = (data or {}).get("rtg_token") or {}
    high = float(seen.get("max", 0.0))
    return ReturnSummary(min=float(seen.get("min", 0.0)), mean=float(seen.get("mean", 0.0)), max=high,
                         typical_max=float(seen.get("typical_max", high)),
                         outliers_above=int(seen.get("outliers_above", 0)),
                         rtg_token_min=token.get("min"), rtg_token_max=token.get("max"))
