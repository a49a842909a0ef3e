"""What a run logs: TensorBoard scalars and metrics.jsonl (rank 0), and the running loss sums and
training clocks between two log steps.

    metrics.jsonl   one JSON object per log event: {"step": s, "<tag>": value, ...}; the tags are
                    train/... (loss, its parts, grad_norm, lr), charts/... (samples_per_s, and the
                    run's cumulative train_wall_s and train_cpu_s), val/... and eval/...

On resume from step s both files forget what a killed run logged after s (`truncate_metrics`).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from mtm.errors import ConfigError
from mtm.io import atomic_write_text
from mtm.training.rundir import METRICS_FILE

#: Where a run directory keeps its Weights & Biases run id (train.loggers: wandb).
WANDB_ID_FILE = "wandb_id.txt"


def truncate_metrics(path: Path, step: int) -> list[dict]:
    """Keep the rows of metrics.jsonl up to `step`, the checkpoint a run resumes from: the steps
    after it are trained and logged again. A row cut short by a kill goes too. Returns the rows kept."""
    if not path.exists():
        return []
    kept, rows = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
            rows.append(row)
    atomic_write_text(path, "".join(kept))
    return rows


def require_loggers(loggers: Sequence[str]) -> None:
    """ConfigError, before anything is read or written, if a logger's package is missing."""
    if "wandb" in loggers:
        try:
            importlib.import_module("wandb")  # optional: pip install 'mtm[wandb]'
        except ImportError:
            raise ConfigError("train.loggers names wandb, but the wandb package is not installed: "
                              "pip install 'mtm[wandb]', or drop wandb from train.loggers") from None


def start_wandb(run_dir: Path, config: dict | None, resumed: bool):
    """A Weights & Biases run for `run_dir`: offline unless WANDB_MODE says otherwise (no account or
    network needed; `wandb sync` uploads later), project WANDB_PROJECT or "mtm", one id per run
    directory (kept in wandb_id.txt) so that a resume continues the same W&B run."""
    require_loggers(["wandb"])
    import wandb

    id_file = run_dir / WANDB_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else None
    if not run_id:
        run_id = wandb.util.generate_id()
        atomic_write_text(id_file, run_id + "\n")
    return wandb.init(project=os.environ.get("WANDB_PROJECT", "mtm"), name=run_dir.name, id=run_id, dir=str(run_dir),
                      config=config, mode=os.environ.get("WANDB_MODE", "offline"),
                      resume="allow" if resumed else None)


class Logger:
    """metrics.jsonl (machine-readable, always) plus the scalar loggers of train.loggers
    (TensorBoard, Weights & Biases), rank 0 only. On resume from step s, metrics.jsonl and
    TensorBoard forget what a killed run logged after s (TensorBoard's purge_step does it for
    events), and `clocks` are the training wall and CPU seconds the run had logged by s."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None, *,
                 loggers: Sequence[str] = ("tensorboard",), config: dict | None = None) -> None:
        self.enabled = enabled
        self.writer = None
        self.wandb = None
        self.jsonl = None
        self.clocks = (0.0, 0.0)
        if enabled:
            if "wandb" in loggers:  # first: a missing package fails before any file is opened
                self.wandb = start_wandb(run_dir, config, resumed=resume_step is not None)
            if resume_step is not None:
                for row in truncate_metrics(run_dir / METRICS_FILE, resume_step):
                    self.clocks = (row.get("charts/train_wall_s", self.clocks[0]),
                                   row.get("charts/train_cpu_s", self.clocks[1]))
            if "tensorboard" in loggers:
                self.writer = SummaryWriter(str(run_dir), purge_step=None if resume_step is None else resume_step + 1)
            self.jsonl = open(run_dir / METRICS_FILE, "a")

    def text(self, tag: str, text: str) -> None:
        if self.writer:
            self.writer.add_text(tag, text)
        if self.wandb is not None:
            self.wandb.summary[tag] = text

    def image(self, tag: str, path: str | Path, step: int) -> None:
        """A PNG file as an image (the contact sheet of an evaluation)."""
        if self.writer:
            with Image.open(path) as picture:
                self.writer.add_image(tag, np.asarray(picture.convert("RGB")), step, dataformats="HWC")
        if self.wandb is not None:
            import wandb  # start_wandb imported it

            self.wandb.log({tag: wandb.Image(str(path))}, step=step)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
        if self.wandb is not None:
            self.wandb.log(dict(values), step=step)
        self.jsonl.write(json.dumps({"step": step, **values}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.jsonl:
            self.jsonl.close()


def val_scalars(errors: dict[str, dict]) -> dict[str, float]:
    return {f"val/{task}_{name}": e[name] for task, e in errors.items() for name in ("mse", "baseline_mse", "ratio")}


def eval_scalars(report: dict) -> dict[str, float]:
    out = {"eval/return_mean": report["return_mean"], "eval/return_std": report["return_std"],
           "eval/env_steps_per_s": report["env_steps_per_s"]}
    if report.get("normalized_score_mean") is not None:
        out["eval/normalized_score"] = report["normalized_score_mean"]
    return out


class LossMeter:
    """Running sums of the loss and its parts between two log steps, kept on the device (no
    per-step sync), and the clocks of training steps only: validation, evaluation, saving and
    logging are left out. flush() gives train/... scalars, charts/samples_per_s, and the run's
    cumulative charts/train_wall_s and charts/train_cpu_s (CPU = user + system of every thread:
    the x axis of learning curves, carried over a resume)."""

    def __init__(self, parts: tuple[str, ...], device: torch.device, clocks: tuple[float, float] = (0.0, 0.0)) -> None:
        self.loss = torch.zeros((), device=device)
        self.parts = {name: torch.zeros((), device=device) for name in parts}
        self.grad_norm = torch.zeros((), device=device)
        self.steps = 0
        self.total_wall, self.total_cpu = clocks
        self.window_wall = 0.0
        self.start = self.last = _clocks()

    def restart_clock(self) -> None:
        """Training steps start again: the time since the last step (other work) is not counted."""
        self._bank()
        self.start = self.last = _clocks()

    def _bank(self) -> None:
        wall, cpu = self.last[0] - self.start[0], self.last[1] - self.start[1]
        self.window_wall += wall
        self.total_wall += wall
        self.total_cpu += cpu
        self.start = self.last

    def add(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], grad_norm: torch.Tensor) -> None:
        self.loss += loss.detach()
        for name, part in parts.items():
            self.parts[name] += part.detach()
        self.grad_norm = grad_norm
        self.steps += 1
        self.last = _clocks()

    def flush(self, batch_size: int) -> dict[str, float]:
        """Means since the last flush, then reset."""
        n = max(self.steps, 1)
        scalars = {
            "train/loss": float(self.loss) / n,  # syncs the device, so the clocks below include the work
            **{f"train/loss_{name}": float(total) / n for name, total in self.parts.items()},
            "train/grad_norm": float(self.grad_norm),
        }
        self.last = _clocks()
        self._bank()
        scalars["charts/samples_per_s"] = self.steps * batch_size / max(self.window_wall, 1e-9)
        scalars["charts/train_wall_s"] = self.total_wall
        scalars["charts/train_cpu_s"] = self.total_cpu
        self.loss.zero_()
        for total in self.parts.values():
            total.zero_()
        self.steps = 0
        self.window_wall = 0.0
        return scalars


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()

