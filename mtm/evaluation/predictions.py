"""Prediction errors on held-out windows, in raw units, next to the mean-prediction baseline.

Each task (PREDICTION_TASKS, named in mtm.policy_config.PREDICTION_TASK_NAMES) is one inference
mask at a current position c and one token to read back. The baseline predicts the training split's
mean of the target modality for every sample: a model that has learnt nothing about the trajectory
scores about 1.0 in `ratio` (its error / baseline's). Only windows whose steps 0..max(c, target) are all real (not padding) are scored, and
only windows whose episode has every modality the task reads or predicts (an episode recorded
without actions scores no BC, RCBC, FD or ID error; without rewards, no RCBC error).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from mtm.checkpoint import Checkpoint
from mtm.config import DataConfig, config_from_dict
from mtm.data.mixture import TrainingData, load_training_data
from mtm.data.windows import WindowSampler
from mtm.errors import ConfigError, DataError
from mtm.model.masks import (POLICY_MASKS, PRESENT_PREFIX, forward_dynamics_mask, goal_reaching_mask,
                             inverse_dynamics_mask,
                             without_action_history)
from mtm.policy import load_model
from mtm.policy_config import PolicyConfig


@dataclass(frozen=True)
class PredictionTask:
    name: str
    description: str
    mask: Callable[..., torch.Tensor]
    current: Callable[[int], int]  # c given the window length L
    target: str  # modality read back
    target_offset: int  # read the target at timestep c + offset
    needs: tuple[str, ...]  # modalities the model must have

    def applies_to(self, model: torch.nn.Module) -> bool:
        return (self.name in model.prediction_tasks and self.current(model.window) >= 0
                and all(m in model.tokenizers for m in self.needs))


PREDICTION_TASKS: dict[str, PredictionTask] = {
    t.name: t
    for t in (
        PredictionTask("bc", "behaviour cloning: action from the state history", POLICY_MASKS["bc"],
                       lambda L: L - 1, "actions", 0, ("states", "actions")),
        PredictionTask("rcbc", "return-conditioned BC: action from states and return-to-go", POLICY_MASKS["rcbc"],
                       lambda L: L - 1, "actions", 0, ("states", "actions", "returns")),
        PredictionTask("fd", "forward dynamics: next state from states and actions",
                       forward_dynamics_mask, lambda L: L - 2, "states", 1, ("states", "actions")),
        PredictionTask("id", "inverse dynamics: action from the state before and after",
                       inverse_dynamics_mask, lambda L: L - 2, "actions", 0, ("states", "actions")),
    )
}


#: What `predict` answers: the validation tasks, and goal reaching (the action at c towards the goal
#: state shown at the window's last step; not scored in validation: held-out data has no goals).
ASKABLE_TASKS: dict[str, PredictionTask] = {
    **PREDICTION_TASKS,
    "goal": PredictionTask("goal", "goal reaching: action from the states so far and a goal state at L-1",
                           goal_reaching_mask, lambda L: 0, "actions", 0, ("states", "actions")),
}


def predict(model: torch.nn.Module, task: str, windows: dict[str, Any], c: int | None = None) -> torch.Tensor:
    """The model's answer to `task` on raw windows, in raw units, without building masks by hand.

    windows: {"states": (B, L, S), "actions": (B, L, A), "returns": (B, L, 1) for rcbc} as numpy
    arrays or tensors; values the task hides are never read (zeros will do). c: the current step
    (default: L-1 for bc and rcbc, L-2 for fd and id, 0 for goal). Returns (B, dim): the action at c
    (bc, rcbc, id, goal) or the state at c + 1 (fd)."""
    if task not in ASKABLE_TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(ASKABLE_TASKS)}")
    spec = ASKABLE_TASKS[task]
    missing = [m for m in spec.needs if m not in model.tokenizers or m not in windows]
    if missing:
        raise ConfigError(f"task {task!r} needs {', '.join(missing)} in the model and in the windows")
    if task != "goal" and task not in model.prediction_tasks:
        raise ConfigError(f"this model ({model.config.kind}) cannot do task {task!r}")
    L = model.window
    c = spec.current(L) if c is None else int(c)
    if not 0 <= c + spec.target_offset < L or c < 0:
        raise ConfigError(f"task {task!r}: c = {c} is outside the window of {L} steps")
    device = next(model.parameters()).device
    batch = {}
    for name in model.tokenizers:
        if name in windows:
            value = torch.as_tensor(np.asarray(windows[name], dtype=np.float32), device=device)
            if value.dim() < 3 or value.shape[1] != L:
                raise ConfigError(f"windows[{name!r}] must be (B, {L}, ...), the model's window; got {tuple(value.shape)}")
            batch[name] = value
    visible = spec.mask(model.layout, c)
    return model.predict(batch, visible, heads=(spec.target,))[spec.target][:, c + spec.target_offset]


def steps_needed(model: torch.nn.Module) -> int | None:
    """Real (unpadded) steps a window needs for at least one task to score it; None if none applies."""
    needs = [t.current(model.window) + t.target_offset + 1 for t in PREDICTION_TASKS.values() if t.applies_to(model)]
    return min(needs) if needs else None


@torch.no_grad()
def prediction_errors(model: torch.nn.Module, sampler: WindowSampler, baseline_means: dict[str, torch.Tensor], *,
                      tasks: tuple[str, ...] = tuple(PREDICTION_TASKS), max_windows: int = 8192,
                      batch_size: int = 1024, action_history: bool = PolicyConfig.action_history) -> dict[str, dict]:
    """{task: {"mse", "baseline_mse", "ratio", "per_dim_mse", "per_dim_baseline_mse", "count"}}.

    Errors are mean squared errors in raw units (averaged over dimensions); `per_dim_*` keep the
    dimensions apart. At most `max_windows` windows, evenly spaced over the split, are scored, so the
    same model and data always give the same figures. The model is put in eval mode and restored.
    action_history=False hides the past actions from bc and rcbc, as a policy without action history
    acts (their offline errors then show whether the model needs its own actions to act).
    """
    chosen = [PREDICTION_TASKS[t] for t in tasks if PREDICTION_TASKS[t].applies_to(model)]
    if not chosen:
        return {}
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, dict[str, torch.Tensor | int]] = {}
    # Evenly spaced windows over the whole split (not the first max_windows in file order, which
    # would score only the first few episodes), the same ones at every call.
    count = min(max_windows, sampler.num_windows)
    ids = torch.linspace(0, sampler.num_windows - 1, count).round().long()
    try:
        for chunk in ids.split(batch_size):
            batch = {k: v.to(device) for k, v in sampler.windows(chunk).items()}
            for task in chosen:
                c = task.current(model.window)
                t = c + task.target_offset
                rows = batch["valid"][:, : t + 1].all(1)
                for modality in task.needs:
                    if PRESENT_PREFIX + modality in batch:
                        rows = rows & batch[PRESENT_PREFIX + modality]
                if not rows.any():
                    continue
                sub = {k: v[rows] for k, v in batch.items()}
                visible = task.mask(model.layout, c)
                if not action_history and task.name in ("bc", "rcbc"):
                    visible = without_action_history(visible, model.layout)
                pred = model.predict(sub, visible, sub["valid"], heads=(task.target,))[task.target][:, t]
                truth = sub[task.target][:, t]
                base = baseline_means[task.target].to(device).expand_as(truth)
                acc = sums.setdefault(task.name, {"err": 0.0, "base": 0.0, "count": 0})
                acc["err"] = acc["err"] + ((pred.float() - truth) ** 2).sum(0)
                acc["base"] = acc["base"] + ((base - truth) ** 2).sum(0)
                acc["count"] += int(rows.sum())
    finally:
        model.train(was_training)

    out = {}
    for name, acc in sums.items():
        n = acc["count"]
        per_dim = (acc["err"] / n).cpu()
        per_dim_base = (acc["base"] / n).cpu()
        mse, base = float(per_dim.mean()), float(per_dim_base.mean())
        out[name] = {
            "mse": mse,
            "baseline_mse": base,
            "ratio": mse / base if base > 0 else float("nan"),
            "per_dim_mse": per_dim.tolist(),
            "per_dim_baseline_mse": per_dim_base.tolist(),
            "count": n,
        }
    return out


def run_training_data(checkpoint: Checkpoint, data_path: str | None = None) -> tuple[str, TrainingData]:
    """The data a checkpoint's run trained on, read as the run read it (format, return-to-go, the
    split of each file): the files where the run found them, or `data_path`. Also names them."""
    data_cfg = config_from_dict(DataConfig, (checkpoint.config or {}).get("data", {}))
    if data_path is not None:
        paths = [data_path]
    else:  # the files the run trained on, where they were when it did
        saved = checkpoint.run_metadata.datasets or [{}]
        configured = [data_cfg.path, *data_cfg.extra_paths]
        paths = [d.get("path") or c for d, c in zip(saved, configured)] if len(saved) == len(configured) else configured
    for path in paths:
        if not path or not Path(path).exists():
            raise DataError(f"the training data {path!r} is not there; pass --data PATH")
    # Held-out episodes are each file's own split (as in training); only_with is not applied, so
    # a model trained on the labelled episodes alone is scored on the same episodes as the others.
    data = load_training_data(paths, format=data_cfg.format, rtg=data_cfg.rtg, gamma=data_cfg.gamma,
                              rtg_horizon=data_cfg.rtg_horizon, val_fraction=data_cfg.val_fraction,
                              split_seed=data_cfg.split_seed)
    return ", ".join(map(str, paths)), data


def evaluate_predictions(checkpoint: Checkpoint, *, tasks: tuple[str, ...], data_path: str | None = None,
                         max_windows: int = 100_000, device: str | torch.device = "cpu",
                         action_history: bool = PolicyConfig.action_history) -> dict[str, Any]:
    """Prediction errors (raw units, per dimension and mean) on the checkpoint's held-out episodes."""
    path, data = run_training_data(checkpoint, data_path)
    model = load_model(checkpoint, device)
    dims = (model.tokenizers["states"].dim, model.tokenizers["actions"].dim)
    everything, val = data.data, data.val
    if (everything.state_dim, everything.action_dim) != dims:
        raise DataError(f"{path}: states have {everything.state_dim} dimensions and actions {everything.action_dim}, "
                        f"but the checkpoint was trained on {dims[0]} and {dims[1]}; give the dataset it was "
                        f"trained on (or one of the same env)")
    if val.num_episodes == 0:
        raise DataError("the run held out no episodes (data.val_fraction = 0): nothing to evaluate on")
    keys = tuple(k for k in ("states", "actions", "returns") if k in model.tokenizers)
    sampler = WindowSampler(val, model.window, device=device, keys=keys)
    stats = checkpoint.run_metadata.stats
    means = {k: torch.as_tensor(stats[k].mean, dtype=torch.float32) for k in ("states", "actions")}
    errors = prediction_errors(model, sampler, means, tasks=tasks, max_windows=max_windows,
                               action_history=action_history)
    missing = [t for t in tasks if t not in errors]
    lacking = [m for m in ("actions", "rewards") if not val.present[m].any()]
    if missing and lacking:
        raise DataError(f"{path}: no held-out episode has {' or '.join(lacking)}, so task(s) {missing} have "
                        f"nothing to score; pass --data with a file whose episodes have them")
    if missing:
        raise ConfigError(f"task(s) {missing} do not apply to this model (window {model.window}, "
                          f"modalities {list(model.tokenizers)})")
    return {
        "checkpoint": str(checkpoint.path),
        "checkpoint_step": checkpoint.step,
        "data": str(path),
        "val_episodes": val.num_episodes,
        "windows": sampler.num_windows,
        "action_history": action_history,
        "tasks": errors,
        "note": "mean squared error in raw units on held-out episodes; baseline predicts the train mean",
    }
