"""What a checkpoint carries besides its weights: the metadata of a run.

`run_metadata` builds it once per run; `runtime` is added by the loop (`runtime_info`), and every
checkpoint the run saves writes it to metadata.json (mtm.checkpoint adds format, format_version,
step, mtm_version, torch_version and created). It is everything a policy, `mtm eval` or a resumed
run needs to use the model without the dataset. Readers look keys up by name, so this is the one
list of them; renaming a key breaks the checkpoints already saved.

    env_id                 the dataset's env id          evaluation.rollouts.evaluate_checkpoint (the
                                                         default env), scripts/bench_eval.py
    dataset                identity of data.path (path,  training.run_data (a resume must read the same
                           kind, size, sha256)           bytes), evaluation.predictions (where the data
                                                         was), evaluation.rollouts (the report)
    datasets               identities of every file,     training.run_data, evaluation.predictions
                           only with data.extra_paths
    data_info              source_format, source,        evaluation.rollouts.references_for (normalised
                           ref_min_score, ref_max_score  scores)
                           observation_space             (for people)
                           action_space {low, high}      policy.MTMPolicy (clips actions)
                           pixels (how `mtm collect`     evaluation.rollouts, training.loop (the env is
                           rendered frames, or null)     made with pixel observations)
    state_keys             observation keys, in order    policy.MTMPolicy
    image_keys             image keys tokenized          policy.MTMPolicy
    rtg                    return-to-go kind, gamma,     policy.MTMPolicy (counts down its target)
                           horizon
    stats                  per-modality statistics of    evaluation.predictions (the baseline of
                           the train split               prediction errors)
    returns                {} without rewards; else      policy.MTMPolicy (the target return: typical_max,
                           episode_return {min, mean,    outliers_above, or a fraction of min..max)
                           max, typical_max,
                           outliers_above},
                           rtg_token {min, max}          (for people)
    split                  val_fraction, seed,           scripts/bench_heteromodal.py
                           train/val_episodes (and
                           *_episodes_with per modality
                           when episodes lack some)
    model                  the model's spec, tokenizers  policy.load_model, training.loop (resume)
                           included
    runtime                device, world_size,           (for people; shown at the start of a run)
                           precision, CPU kernel and
                           threads
"""

from __future__ import annotations

import torch

from mtm.config import RunConfig
from mtm.data.returns import typical_best_return
from mtm.data.trajectories import Trajectories
from mtm.hardware import Precision, cpu_kernel_path, thread_summary
from mtm.training.run_data import RunData
from mtm.training.runtime import Runtime


def run_metadata(cfg: RunConfig, run: RunData, model: torch.nn.Module) -> dict:
    """What a checkpoint carries besides weights: everything a policy or `mtm eval` needs to use
    the model without the dataset (statistics, return range, spaces, keys, the model's spec)."""
    info = run.data.info
    return {
        "env_id": info.env_id,
        "dataset": run.identities[0],
        **({"datasets": run.identities} if len(run.identities) > 1 else {}),
        "data_info": {
            "source_format": info.source_format, "source": info.source,
            "ref_min_score": info.ref_min_score, "ref_max_score": info.ref_max_score,
            "observation_space": info.observation_space, "action_space": info.action_space,
            "pixels": info.extra.get("pixels"),  # how `mtm collect` rendered frames, if it did
        },
        "state_keys": run.data.state_keys,
        "image_keys": run.image_keys,
        "rtg": run.data.rtg,
        "stats": {k: v.to_dict() for k, v in run.stats.items()},
        "returns": _return_summary(run.train),
        "split": {"val_fraction": cfg.data.val_fraction, "seed": cfg.data.split_seed,
                  "train_episodes": run.train.num_episodes, "val_episodes": run.val.num_episodes,
                  **({} if run.data.complete else {
                      "train_episodes_with": {m: int(f.sum()) for m, f in run.train.present.items()},
                      "val_episodes_with": {m: int(f.sum()) for m, f in run.val.present.items()}})},
        "model": model.spec(),
    }


def _return_summary(data: Trajectories) -> dict:
    """What a policy needs to pick a target return: episode returns and the return-token range,
    over the episodes that have rewards ({} if none has)."""
    if not data.present["rewards"].any():
        return {}
    ep = data.episode_returns()[data.present["rewards"]]
    rtg = data.arrays["returns"][data.rows_with("returns"), 0]
    typical, outliers = typical_best_return(ep)
    return {
        "episode_return": {"min": float(ep.min()), "mean": float(ep.mean()), "max": float(ep.max()),
                           "typical_max": typical, "outliers_above": outliers},
        "rtg_token": {"min": float(rtg.min()), "max": float(rtg.max())},
    }


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
