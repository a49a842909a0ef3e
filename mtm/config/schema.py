"""The configuration schema: the dataclasses `mtm train` composes, one per concern (``TokenConfig``,
``ModelConfig``, ``MaskConfig`` and ``PolicyConfig`` live next to the code they configure).

Each field is one line, `name: type = default  # meaning`, which scripts/gen_config_docs.py copies
into docs/configuration.md. ``__post_init__`` raises ``ValueError("field must be ..., got ...")``
(the loader names the section); ``LEGACY_KEYS`` maps keys of older configs onto their successors.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

from mtm.hardware import PrecisionName
from mtm.model.masks import MaskConfig
from mtm.model.network import ModelConfig
from mtm.model.tokenizers import TokenConfig
from mtm.policy_config import PolicyConfig


@dataclasses.dataclass
class DataConfig:
    path: str = ""  # dataset: an HDF5 file (D4RL, robomimic, native) or a Minari dataset folder
    format: str | None = None  # reader to use; null = detect from the file's layout
    window: int = 4  # timesteps per training sample (the paper's L; 3 tokens each for s, a, R)
    rtg: Literal["sum", "discounted", "average"] = "average"  # return-to-go: MTM uses the average
    gamma: float = 0.99  # discount, used only by rtg=discounted
    rtg_horizon: int = 1000  # H in the average return-to-go: sum of future rewards / (H - t)
    val_fraction: float = 0.1  # share of episodes held out for validation (shuffled, not the tail)
    split_seed: int = 0  # seed of the train/val episode split, independent of the training seed
    extra_paths: list[str] = dataclasses.field(default_factory=list)  # more datasets trained on together with path (mtm train --data A --data B); same robot, each split on its own; their episodes may lack actions or rewards
    weights: list[float] = dataclasses.field(default_factory=list)  # chance that a sample comes from each dataset (path first, then extra_paths); empty = every window equally likely
    only_with: list[Literal["actions", "rewards"]] = dataclasses.field(default_factory=list)  # train only on the episodes that have these modalities (after the split, so the held-out episodes stay the same)
    action_share: float | None = None  # chance that a sample comes from an episode with actions (the labelled part of partly labelled data); null = every window equally likely
    frames: Literal["auto", "memory", "file"] = "auto"  # where training reads image frames: memory (decoded once at the start; a batch is then one gather, ~50x cheaper than from the file), file (each batch's frames from the file, for data larger than memory), auto = memory where they take at most a quarter of the machine's RAM (per process under torchrun)

    def __post_init__(self) -> None:
        _check(self.window >= 1, f"window must be >= 1, got {self.window}")
        _check(all(w >= 0 for w in self.weights) and (not self.weights or sum(self.weights) > 0),
               f"weights must be >= 0 with a positive sum, got {list(self.weights)}")
        _check(not self.weights or len(self.weights) == 1 + len(self.extra_paths),
               f"weights has {len(self.weights)} entries for {1 + len(self.extra_paths)} dataset(s) "
               f"(path and extra_paths); give one per dataset")
        _check(self.action_share is None or 0.0 < self.action_share < 1.0,
               f"action_share must be in (0, 1) or null, got {self.action_share}")
        _check(self.action_share is None or not self.weights,
               "weights and action_share both set: give one (action_share draws by labels, weights by file)")
        _check(0.0 < self.gamma <= 1.0, f"gamma must be in (0, 1], got {self.gamma}")
        _check(self.rtg_horizon >= 1, f"rtg_horizon must be >= 1, got {self.rtg_horizon}")
        _check(0.0 <= self.val_fraction < 1.0, f"val_fraction must be in [0, 1), got {self.val_fraction}")


#: The scalar loggers train.loggers may name (metrics.jsonl is always written).
LOGGERS = ("tensorboard", "wandb")


@dataclasses.dataclass
class TrainConfig:
    steps: int = 140_000  # optimiser steps in total
    batch_size: int = 2048  # windows per step (global: split across processes under torchrun)
    lr: float = 1e-4  # peak learning rate of AdamW
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    weight_decay: float = 0.005  # applied to Linear/attention weights only, never biases or norms
    warmup_steps: int = 40_000  # linear warm-up from 0, then cosine decay to 0 at `steps`
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    ema_decay: float = 0.0  # keep an exponential moving average of the weights with this decay (e.g. 0.999): checkpoints, validation and evaluation then use the average (mtm.training.ema); 0 = off
    loss_on: Literal["all", "masked"] = "all"  # reconstruct every token (MTM) or hidden ones only
    loss_weights: dict[str, float] = dataclasses.field(default_factory=dict)  # per modality; absent = 1
    mask: MaskConfig | str = dataclasses.field(default_factory=MaskConfig)  # the training mask (section below); the short form "random_autoregressive:0.8,bc:0.2" sets its modes
    seed: int = 0  # seeds python, numpy and torch; each process adds its rank
    device: str = "auto"  # auto = cuda, then mps, then cpu; or cuda, cuda:1, cpu, mps
    precision: PrecisionName = "auto"  # auto = bf16 autocast where the device multiplies bf16 natively (CUDA, AVX512-BF16/AMX CPUs), else fp32 (mtm.hardware)
    compile: bool = False  # torch.compile the model
    deterministic: bool = False  # deterministic kernels (slower); for bit-exact reruns
    log_every: int = 100  # steps between train/... scalars
    val_every: int = 2000  # steps between validation passes; 0 = never
    val_windows: int = 2048  # held-out windows scored per validation pass (fixed, in order)
    save_every: int = 5000  # steps between checkpoints; the final step is always saved
    eval_every: int = 0  # steps between rollouts in the env (eval/... in TensorBoard); 0 = never. The final step is evaluated when > 0
    eval_episodes: int = 10  # episodes per evaluation (seeds eval_seed .. eval_seed + n - 1)
    eval_num_envs: int = 10  # environments stepped together
    eval_policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)  # how the policy acts in these evaluations (mtm.policy_config; precision auto = the run's train.precision)
    eval_seed: int = 1000  # first episode seed of every evaluation (the same episodes each time)
    eval_env: str | None = None  # gymnasium id; null = the dataset's env
    eval_video: bool = False  # also write runs/.../videos/step_N.mp4 of the first episode, and step_N.png, its contact sheet (also in TensorBoard: eval/contact_sheet)
    eval_video_quality: Literal["fast", "nice"] = "fast"  # fast: no shadows, reflections or anti-aliasing (many times faster on a CPU); nice: MuJoCo's full look
    loggers: list[str] = dataclasses.field(default_factory=lambda: ["tensorboard"])  # where scalars go besides metrics.jsonl (always written): tensorboard, wandb (Weights & Biases, offline unless WANDB_MODE says otherwise; pip install 'mtm[wandb]')
    keep_last: int = 3  # checkpoints kept on disk; 0 = keep all
    run_dir: str = "runs/mtm"  # config, TensorBoard events, checkpoints and reports go here

    # Keys of older configs, read as the key that replaced them: {old: (new, value converter)}.
    LEGACY_KEYS: ClassVar[dict[str, tuple[str, Any]]] = {
        "bf16": ("precision", lambda on: _legacy_bool(on, "bf16", "fp32")),  # train.bf16: true/false, before precision
        "eval_mode": ("eval_policy.mode", lambda mode: mode),  # before eval_policy
        "eval_target_fraction": ("eval_policy.target_fraction", lambda p: p),
    }

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "val_windows", "eval_episodes", "eval_num_envs"):
            _check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "val_every", "save_every", "eval_every", "keep_last", "grad_clip", "weight_decay"):
            _check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        _check(all(0.0 <= b < 1.0 for b in self.betas), f"betas must be in [0, 1), got {list(self.betas)}")
        for key, weight in self.loss_weights.items():
            _check(weight >= 0, f"loss_weights.{key} must be >= 0, got {weight}")
        _check(bool(self.run_dir), "run_dir must not be empty")
        unknown = sorted(set(self.loggers) - set(LOGGERS))
        _check(not unknown, f"loggers: unknown {unknown}; choose from {', '.join(LOGGERS)}")
        if isinstance(self.mask, str):  # the short string form (mtm.model.masks.MaskConfig.parse)
            try:
                self.mask = MaskConfig.parse(self.mask)
            except ValueError as exc:
                raise ValueError(f"mask.{exc}") from None


@dataclasses.dataclass
class RunConfig:
    """Everything `mtm train` needs; saved resolved as config.yaml in the run directory."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    tokens: TokenConfig = dataclasses.field(default_factory=TokenConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _legacy_bool(value: Any, on: Any, off: Any) -> Any:
    """A LEGACY_KEYS converter for an old boolean key; TypeError(bool) tells the loader it wanted a bool."""
    if not isinstance(value, bool):
        raise TypeError(bool)
    return on if value else off
