"""What a checkpoint carries besides its weights: the `RunMetadata` of a run (mtm.run_metadata
lists its fields, the JSON keys they are saved under and who reads them).

`run_metadata` builds it once per run; `runtime` is added by the loop (`runtime_info`), and every
checkpoint the run saves writes it to metadata.json. It is everything a policy, `mtm eval` or a
resumed run needs to use the model without the dataset.
"""

from __future__ import annotations

import torch

from mtm.config import RunConfig
from mtm.data.returns import typical_best_return
from mtm.data.trajectories import Trajectories
from mtm.hardware import Precision, cpu_kernel_path, thread_summary
from mtm.run_metadata import DataSummary, ReturnSummary, ReturnToGo, RunMetadata
from mtm.training.run_data import RunData
from mtm.training.runtime import Runtime


def run_metadata(cfg: RunConfig, run: RunData, model: torch.nn.Module) -> RunMetadata:
    """What a checkpoint carries besides weights: everything a policy or `mtm eval` needs to use
    the model without the dataset (statistics, return range, spaces, keys, the model's spec)."""
    info = run.data.info
    return RunMetadata(
        env_id=info.env_id,
        datasets=list(run.identities),
        data_info=DataSummary(
            source_format=info.source_format, source=info.source,
            ref_min_score=info.ref_min_score, ref_max_score=info.ref_max_score,
            observation_space=info.observation_space, action_space=info.action_space,
            pixels=info.extra.get("pixels"),  # how `mtm collect` rendered frames, if it did
            reset_seeds=collected_reset_seeds(info),
        ),
        state_keys=list(run.data.state_keys),
        image_keys=list(run.image_keys),
        rtg=ReturnToGo(**run.data.rtg),
        stats=dict(run.stats),
        returns=_return_summary(run.train),
        split={"val_fraction": cfg.data.val_fraction, "seed": cfg.data.split_seed,
               "train_episodes": run.train.num_episodes, "val_episodes": run.val.num_episodes,
               **({} if run.data.complete else {
                   "train_episodes_with": {m: int(f.sum()) for m, f in run.train.present.items()},
                   "val_episodes_with": {m: int(f.sum()) for m, f in run.val.present.items()}})},
        model=model.spec(),
    )


def collected_reset_seeds(info) -> list[list[int]] | None:
    """The reset seeds of a file `mtm collect` wrote, as [first, last] ranges; files from before it
    recorded them: the requested range of a collection that was not interrupted; else None."""
    extra = info.extra or {}
    if info.source_format != "collect":
        return None
    if extra.get("reset_seeds"):
        return [[int(a), int(b)] for a, b in extra["reset_seeds"]]
    if not extra.get("interrupted") and isinstance(extra.get("seed"), int) and isinstance(extra.get("episodes_requested"), int):
        return [[extra["seed"], extra["seed"] + extra["episodes_requested"] - 1]]
    return None


def _return_summary(data: Trajectories) -> ReturnSummary | None:
    """What a policy needs to pick a target return: episode returns and the return-token range,
    over the episodes that have rewards (None if none has)."""
    if not data.present["rewards"].any():
        return None
    ep = data.episode_returns()[data.present["rewards"]]
    rtg = data.arrays["returns"][data.rows_with("returns"), 0]
    typical, outliers = typical_best_return(ep)
    return ReturnSummary(min=float(ep.min()), mean=float(ep.mean()), max=float(ep.max()), typical_max=typical,
                         outliers_above=outliers, rtg_token_min=float(rtg.min()), rtg_token_max=float(rtg.max()))


def runtime_info(rt: Runtime, precision: Precision) -> dict:
    """Where and how the run computes: saved in every checkpoint's metadata and shown at start."""
    info = {"device": str(rt.device), "world_size": rt.world_size, "precision": precision.to_dict()}
    if rt.device.type == "cpu":
        info.update(cpu=cpu_kernel_path(), threads=torch.get_num_threads(), threads_summary=thread_summary())
    return info


def describe_runtime(info: dict) -> str:
    text = f"device {info['device']}, precision {info['precision']['dtype']} ({info['precision']['reason']})"
    if info.get("threads_summary"):
        text += f", {info['threads_summary']}"
    if info["world_size"] > 1:
        text += f", {info['world_size']} processes"
    return text
