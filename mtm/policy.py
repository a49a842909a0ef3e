"""A trained MTM as a batched policy: K environments, one forward pass per step, on any device
(usage: README, "Using a trained policy in your own loop").

The last L states, actions and return tokens of each environment live in (K, L, ...) tensors on the
device. At step t the current state goes to position c = min(t, L-1) (older steps shift out at the
front once the window is full); positions after c are the hidden future, as in a training window
that starts at an episode's beginning, so the first steps need no padding the model never saw.
Modes are masks (mtm.model.masks): bc shows states 0..c and actions 0..c-1 and reads the action at
c; rcbc adds the return token at every position; action_history=False hides the past actions too.

RCBC target: an episode return G, given (`target_return`), or G = min + p (max - min) of the training
episode returns (`target_fraction` p; 1 = the best seen, whatever their sign), or by default the best
training return that is not an outlier above Tukey's fence (mtm.data.returns.typical_best_return;
the best itself on data without such outliers). It becomes the data's return token
(mtm.data.returns), held constant (official MTM) or, with `decrement`, that of the return still to
come, G minus the rewards received so far (Decision Transformer style):
    sum          G                       | G - received
    average      G / H                   | (G - received) / (H - t)
    discounted   (G / H)(1 - γ^H)/(1 - γ) | ((G - received) / (H - t)) (1 - γ^(H-t))/(1 - γ)
where H is the data's rtg horizon. A target must be finite and within TARGET_RANGES times the range
of the training returns: beyond it the model only extrapolates, and targets like 1e30 overflow into NaN.

Actions are decoded to raw units and clipped to the action space. Clipping cannot repair a NaN, and an
evaluation must not report returns of a policy that does not exist: act() raises NonFiniteActionError.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from mtm.checkpoint import Checkpoint, load_checkpoint
from mtm.cuda_graph import GraphedCall
from mtm.errors import ConfigError, MTMError
from mtm.hardware import resolve_precision
from mtm.model.masks import NEXT_STATE_FIRST, NEXT_STATE_VIEW, POLICY_MASKS, without_action_history
from mtm.model.build import model_from_spec
from mtm.planning import Planner
from mtm.policy_config import POLICY_MODES, PolicyConfig
from mtm.rollout import PixelSpec, make_env
from mtm.run_metadata import RunMetadata

__all__ = ["MTMPolicy", "NonFiniteActionError", "POLICY_MODES", "PolicyConfig", "load_model"]
#: How far outside the training episode returns an RCBC target may lie, in units of their range.
TARGET_RANGES = 100.0


class NonFiniteActionError(MTMError):
    """The model produced a NaN or infinite action (nothing was sent to the environment)."""


def check_target_fraction(p: float) -> float:
    """A target fraction p (G = min + p (max - min)) the model can be asked for; ConfigError if not."""
    if not math.isfinite(p):
        raise ConfigError(f"the target fraction must be a finite number, got {p}")
    if abs(p) > TARGET_RANGES:
        raise ConfigError(f"the target fraction {p:g} is far outside the training returns; ask for one between "
                          f"{-TARGET_RANGES:g} and {TARGET_RANGES:g} (0 = the worst training return, 1 = the best)")
    return p


def _check_target_return(g: float, low: float, high: float) -> float:
    if not math.isfinite(g):
        raise ConfigError(f"the target return must be a finite number, got {g}")
    span = high - low if high > low else max(abs(low), 1.0)  # one training return: its own scale
    if abs(g - low) / span > TARGET_RANGES:  # the same bound as check_target_fraction
        raise ConfigError(f"the target return {g:g} is far outside the training returns ({low:.4g} .. {high:.4g}); "
                          f"ask for one within {TARGET_RANGES:g} times their range of them")
    return g


def load_model(checkpoint: Checkpoint, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild the model (an MTM or an MLP baseline) from a checkpoint alone, in eval mode."""
    model = model_from_spec(checkpoint.run_metadata.model)
    model.load_state_dict(checkpoint.model_state)
    return model.to(device).eval()


#: The PolicyConfig fields whose None is a setting of its own (their type admits it).
NULLABLE_SETTINGS = frozenset(f.name for f in dataclasses.fields(PolicyConfig) if "None" in str(f.type))


def _with_settings(config: PolicyConfig | None, settings: dict[str, Any]) -> PolicyConfig:
    """`config` (default: PolicyConfig()) with single fields changed; unknown names are a TypeError
    (a programming mistake), bad values a ConfigError (one line for users). None leaves a field as
    it is (e.g. mode=args.mode when no --mode was given), except where None is one of the field's
    values: plan_max_gain=None is no cap, target_return=None no fixed target."""
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(PolicyConfig)})
    if unknown:
        raise TypeError(f"MTMPolicy got unknown setting(s) {unknown}; see mtm.policy_config.PolicyConfig")
    base = config or PolicyConfig()
    changes = {k: v for k, v in settings.items() if v is not None or k in NULLABLE_SETTINGS}
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _resolve_mode(model: torch.nn.Module, asked: str) -> str:
    """The mode to act in (auto: rcbc where the model can, else bc), or a ConfigError saying why not."""
    mode = default_mode(model) if asked == "auto" else asked
    if mode not in POLICY_MODES:
        raise ConfigError(f"unknown policy mode {mode!r}; choose one of {', '.join(POLICY_MODES)}")
    if mode in ("rcbc", "plan") and "returns" not in model.tokenizers:
        raise ConfigError(f"mode {mode!r} needs a model trained with return tokens (tokens.use_returns); "
                          "use --mode bc")
    if mode not in model.policy_modes:
        raise ConfigError(f"this model ({model.config.kind}) acts in mode {' or '.join(model.policy_modes)} only, "
                          f"not {mode!r}")
    if mode in NEXT_STATE_FIRST and model.window < 2:
        raise ConfigError(f"mode {mode!r} predicts the next state and acts by inverse dynamics, which needs a "
                          f"model of 2 or more steps per window (data.window); this one has 1: use --mode bc")
    return mode


def default_mode(model: torch.nn.Module) -> str:
    """RCBC when the model can do it (it conditions on the return asked for), else BC."""
    return "rcbc" if "rcbc" in model.policy_modes and "returns" in model.tokenizers else "bc"


class MTMPolicy:
    """`config` (a PolicyConfig) says how the model acts; keyword settings (mode="bc",
    target_fraction=0.9, ...) change single fields of it. `metadata`: the checkpoint's
    (mtm.run_metadata.RunMetadata, or the dict of its metadata.json)."""

    def __init__(self, model: torch.nn.Module, metadata: RunMetadata | dict[str, Any],
                 config: PolicyConfig | None = None, *, num_envs: int = 1, device: torch.device | str = "cpu",
                 **settings: Any) -> None:
        self.config = config = _with_settings(config, settings)
        meta = metadata if isinstance(metadata, RunMetadata) else RunMetadata.from_dict(metadata)
        self.mode = _resolve_mode(model, config.mode)
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        # One forward pass of act() holds num_envs windows: few rows, where auto may keep fp32 on a CPU.
        self.precision = resolve_precision(config.precision, self.device, work=model.inference_work(num_envs),
                                           fp32_only=model.fp32_only)
        self.autocast = self.precision.autocast(self.device)
        self.num_envs = num_envs
        self.window = model.window
        #: The gymnasium id of the task the training data came from (None if the data named none).
        self.env_id: str | None = meta.env_id
        self._pixels = PixelSpec.from_dict(meta.data_info.pixels)
        self.state_keys: list[str] = list(meta.state_keys)
        self.image_keys: list[str] = list(meta.image_keys)
        self.state_dim = model.tokenizers["states"].dim
        self.action_dim = model.tokenizers["actions"].dim
        self.action_low, self.action_high = self._action_bounds(meta)
        self.rtg_kind, self.gamma, self.horizon = meta.rtg.kind, float(meta.rtg.gamma), int(meta.rtg.horizon)
        self._choose_target(meta, config)
        self.decrement = config.decrement
        self._allocate_buffers()
        self._build_views(config)
        self._batch_keys = sorted(self.model_inputs(1)[0])  # the order act() passes a graphed call its batch
        self.cuda_graph: GraphedCall | None = None
        if config.cuda_graph:
            if self.device.type != "cuda":
                raise ConfigError(f"cuda_graph needs a CUDA device; the policy runs on {self.device} "
                                  "(use --device cuda, or leave --cuda-graph out)")
            if self.image_keys:
                raise ConfigError("cuda_graph is not available for models of image observations yet; "
                                  "leave --cuda-graph out")
            self.cuda_graph = GraphedCall(self._static_predict)
        if self.mode in NEXT_STATE_FIRST and self.image_keys:
            raise ConfigError(f"mode {self.mode!r} imagines the next state, and a model of image observations "
                              "cannot predict its frame; use --mode bc")
        self.planner = None
        if self.mode == "plan":
            self.planner = Planner(model, config, self.action_low, self.action_high, num_envs=num_envs,
                                   image_keys=self.image_keys)

    def _action_bounds(self, meta: RunMetadata) -> tuple[torch.Tensor, torch.Tensor]:
        """The action space's (low, high) as (A,) tensors; unbounded where the data did not say."""
        space = meta.data_info.action_space or {}
        low = np.asarray([float(x) for x in space.get("low", [-np.inf] * self.action_dim)], np.float32)
        high = np.asarray([float(x) for x in space.get("high", [np.inf] * self.action_dim)], np.float32)
        return torch.as_tensor(low, device=self.device), torch.as_tensor(high, device=self.device)

    def _choose_target(self, meta: RunMetadata, config: PolicyConfig) -> None:
        """target_return, and how it was chosen (target_rule; target_outliers: how many training
        returns the default left out), for the modes that condition on a return."""
        seen = meta.returns
        low, high = (seen.min, seen.max) if seen is not None else (0.0, 0.0)
        self.target_outliers = 0
        if config.target_return is not None:
            self.target_rule, target_return = "given", config.target_return
        elif config.target_fraction is not None:
            p = check_target_fraction(float(config.target_fraction))
            self.target_rule, target_return = "fraction", low + p * (high - low)
        else:
            # The best training return that is not an outlier (mtm.data.returns.typical_best_return);
            # checkpoints that predate it ask for the best.
            self.target_rule = "typical best"
            target_return = seen.typical_max if seen is not None else high
            self.target_outliers = seen.outliers_above if seen is not None else 0
        self.target_return = _check_target_return(float(target_return), float(low), float(high))

    def _allocate_buffers(self) -> None:
        """The (K, L, ...) history of every environment slot, on the device."""
        model, k, L, dev = self.model, self.num_envs, self.window, self.device
        self.states = torch.zeros(k, L, self.state_dim, device=dev)
        self.actions = torch.zeros(k, L, self.action_dim, device=dev)
        self.returns = torch.zeros(k, L, 1, device=dev)
        # Frames stay uint8 on the device; the image tokenizer normalises them inside the model.
        self.images = {
            key: torch.zeros(k, L, model.tokenizers[key].height, model.tokenizers[key].width,
                             model.tokenizers[key].channels, dtype=torch.uint8, device=dev)
            for key in self.image_keys
        }
        self.steps = torch.zeros(k, dtype=torch.long, device=dev)  # steps taken in the episode
        self.received = torch.zeros(k, dtype=torch.float64, device=dev)  # return received so far
        self._positions = torch.arange(L, device=dev)
        self._rows = torch.arange(k, device=dev)

    def _build_views(self, config: PolicyConfig) -> None:
        """What the model is shown at each current position c, and which outputs are read."""
        model, L, dev = self.model, self.window, self.device
        mode = self.mode
        layout = model.layout
        # The current step's latest position: the window's last, or the one before it where the
        # mode's view shows the next state (NEXT_STATE_FIRST); the window slides once it is passed.
        self._last = L - 2 if mode in NEXT_STATE_FIRST else L - 1
        positions = range(self._last + 1)
        # The mask for each current position c, precomputed: row c is used at step c.
        self._masks = torch.stack([POLICY_MASKS[mode](layout, c) for c in positions]).to(dev)
        # Modes that show return tokens condition on the target (rcbc, plan).
        self.conditions_on_return = bool((self._masks & layout.role("returns").to(dev)).any())
        if not config.action_history:
            # The default: with its past actions shown, a model can imitate the behaviour they resemble
            # rather than act on the return it is asked for (BENCHMARKS.md, "Action history").
            self._masks = without_action_history(self._masks, model.layout)
        self.action_history = config.action_history
        # Row c: the action token(s) at position c, the only outputs act() reads; the network then
        # runs its last decoder block for those tokens alone (faster act(), BENCHMARKS.md).
        self._queries = torch.stack([layout.role("actions") & (layout.timestep == t) for t in positions]).to(dev)
        # Modes that act on the next state predict it first: the view and the state token it is read from.
        self._next_masks = self._next_queries = None
        if mode in NEXT_STATE_FIRST:
            self._next_masks = torch.stack([NEXT_STATE_VIEW(layout, c) for c in positions]).to(dev)
            if not config.action_history:
                self._next_masks = without_action_history(self._next_masks, layout)
            self._next_queries = torch.stack([layout.role("states") & (layout.timestep == c + 1)
                                              for c in positions]).to(dev)

    @classmethod
    def from_checkpoint(cls, path: str, *, device: torch.device | str = "cpu", **kwargs: Any) -> "MTMPolicy":
        """The policy of a run directory (its last checkpoint) or of a checkpoint directory, on
        `device`. Keywords: `num_envs` and any PolicyConfig field (mode="bc", target_fraction=0.9,
        plan_candidates=32, ...), or `config=PolicyConfig(...)` whole."""
        checkpoint = load_checkpoint(path)
        return cls(load_model(checkpoint, device), checkpoint.run_metadata, device=device, **kwargs)

    def make_env(self, **env_kwargs: Any):
        """A gymnasium env of the task the model was trained on, as `mtm eval` makes it (with the
        pixel observations the data was recorded with). Keywords go to gymnasium.make."""
        if not self.env_id:
            raise ConfigError("the checkpoint's dataset names no environment; make one with gymnasium.make")
        return make_env(self.env_id, env_kwargs, self._pixels)

    def return_token(self, steps: torch.Tensor, received: torch.Tensor) -> torch.Tensor:
        """(K,) return tokens for the target (see the module docstring for the formulas)."""
        g, h = self.target_return, float(self.horizon)
        t = steps.double()
        if self.rtg_kind == "sum":
            value = g - received if self.decrement else torch.full_like(received, g)
            return value.float()
        remaining = (h - t).clamp_min(1.0) if self.decrement else torch.full_like(t, h)
        rate = ((g - received) / remaining) if self.decrement else torch.full_like(received, g / h)
        if self.rtg_kind == "average":
            return rate.float()
        gamma = self.gamma
        if gamma >= 1.0:
            return (rate * remaining).float()
        return (rate * (1 - gamma ** remaining) / (1 - gamma)).float()

    def reset(self, env_indices: Any = None, episode_indices: Any = None) -> None:
        """Start new episodes in these environment slots (all of them when None)."""
        rows = self._rows
        if env_indices is not None:
            rows = torch.as_tensor(np.asarray(env_indices), device=self.device).long()
        self.steps[rows] = 0
        self.received[rows] = 0.0
        for buf in (self.states, self.actions, self.returns, *self.images.values()):
            buf[rows] = 0
        if self.planner is not None and episode_indices is not None:
            self.planner.reset(rows.tolist(), np.asarray(episode_indices).reshape(-1).tolist())

    def observe(self, rewards: Any) -> None:
        r = torch.as_tensor(np.asarray(rewards, dtype=np.float64), device=self.device)
        self.received[: r.shape[0]] += r

    def _state_batch(self, observations: Any) -> torch.Tensor:
        if self.image_keys and not isinstance(observations, dict):
            raise ConfigError(f"the model reads the image observation(s) {self.image_keys}: pass a dict observation")
        if isinstance(observations, dict):
            missing = [k for k in self.state_keys if k not in observations]
            if missing:
                raise ConfigError(f"observations lack the key(s) {missing} the model was trained on")
            parts = [np.asarray(observations[k], np.float32).reshape(len(observations[k]), -1) for k in self.state_keys]
            obs = np.concatenate(parts, axis=1)
        else:
            obs = np.asarray(observations, np.float32).reshape(len(observations), -1)
        if obs.shape[1] != self.state_dim:
            raise ConfigError(
                f"observations have {obs.shape[1]} dimensions, the model was trained on {self.state_dim}"
            )
        return torch.as_tensor(obs, device=self.device)

    @torch.no_grad()
    def act(self, observations: Any) -> np.ndarray:
        """Actions (n, act_dim) for the first n = len(observations) environment slots."""
        obs = self._state_batch(observations)
        n = obs.shape[0]
        if n > self.num_envs:
            raise ConfigError(f"got observations for {n} environments, the policy was built for {self.num_envs}")
        L = self.window
        rows = self._rows[:n]
        # Once the current step has passed its latest position (L - 1, or L - 2 where the mode shows
        # the next state), shift every buffer left by one to make room for it.
        full = self.steps[:n] > self._last
        for buf in (self.states, self.actions, self.returns, *self.images.values()):
            shape = (n,) + (1,) * (buf.dim() - 1)
            buf[:n] = torch.where(full.view(shape), buf[:n].roll(-1, dims=1), buf[:n])
        c = self.steps[:n].clamp(max=self._last)
        self.states[rows, c] = obs
        for key, buf in self.images.items():
            buf[rows, c] = torch.as_tensor(np.asarray(observations[key]), device=self.device)
        self.actions[rows, c] = 0.0  # the action being chosen: hidden, its value never seen
        if self.conditions_on_return:
            # The target at every position (the reference evaluation shows the return token at all
            # L positions); with decrement, the history keeps the tokens it had at its own steps.
            token = self.return_token(self.steps[:n], self.received[:n])
            if self.decrement:
                self.returns[rows, c] = token[:, None]
                self.returns[:n] = torch.where(self._positions[None, :, None] > c[:, None, None],
                                               token[:, None, None], self.returns[:n])
            else:
                self.returns[:n] = token[:, None, None].expand(n, L, 1)
        batch, visible, queries = self.model_inputs(n)
        if self._next_masks is not None:  # the next state first, into the window at c + 1 (batch views it)
            with self.autocast:
                following = self.model.predict(batch, self._next_masks[c], heads=("states",),
                                               queries=self._next_queries[c])["states"]
            self.states[rows, c + 1] = following[rows, c + 1].float()
        if self.cuda_graph is not None and n == self.num_envs:  # a caller acting for fewer slots: eager
            predicted = self.cuda_graph(*(batch[key] for key in sorted(batch)), visible, queries)
        else:
            with self.autocast:
                predicted = self.model.predict(batch, visible, heads=("actions",), queries=queries)["actions"]
        predicted = predicted[rows, c].float()
        action = torch.maximum(torch.minimum(predicted, self.action_high), self.action_low)
        if self.planner is not None:
            action = self.planner(batch, c, action)
        out = action.cpu().numpy()
        if not np.isfinite(out).all():  # the copy to the host syncs anyway: this check is free
            self._refuse(out, obs)
        self.actions[rows, c] = action
        self.steps[:n] += 1
        return out

    def _static_predict(self, *tensors: torch.Tensor) -> torch.Tensor:
        """The action head's outputs (n, L, A) from act()'s inputs (the batch's tensors in sorted key
        order, then visible, then queries) through the model's static forward: the call a CUDA graph
        captures (GraphedCall)."""
        keys = self._batch_keys
        batch = dict(zip(keys, tensors[: len(keys)], strict=True))
        visible, queries = tensors[len(keys):]
        static = {"static": True} if getattr(self.model, "static_forward", False) else {}
        with self.precision.autocast(self.device, cache=False):
            return self.model.predict(batch, visible, heads=("actions",), queries=queries, **static)["actions"]

    def model_inputs(self, n: int | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """(batch, visible, queries) of the first n env slots (all by default) as act() gives them to
        `model.predict` once the current observation is in place: the windows (n, L, ...) on the
        policy's own buffers, the view of each env's current position c = min(steps, L - 1) (L - 2 in
        mode id) (n, N), and the tokens whose outputs act() reads (n, N)."""
        n = self.num_envs if n is None else n
        c = self.steps[:n].clamp(max=self._last)
        # Every position is a real step: those after c are the hidden future, exactly as in the
        # training windows that start at an episode's beginning (not padding, which training only
        # saw past an episode's end).
        batch = {
            "states": self.states[:n],
            "actions": self.actions[:n],
            "timesteps": (self.steps[:n] - c)[:, None] + self._positions[None, :],
        }
        if "returns" in self.model.tokenizers:
            batch["returns"] = self.returns[:n]
        for key, buf in self.images.items():
            batch[key] = buf[:n]
        return batch, self._masks[c], self._queries[c]

    def _refuse(self, actions: np.ndarray, obs: torch.Tensor) -> None:
        bad = np.flatnonzero(~np.isfinite(actions).all(axis=1)).tolist()
        steps = sorted({int(self.steps[i]) for i in bad})
        when = f"step {steps[0]}" if len(steps) == 1 else f"steps {steps}"
        if not bool(torch.isfinite(obs[bad]).all()):
            cause = "the observations given to it were not finite"
        else:
            cause = "its inputs were finite, so the checkpoint (weights or statistics) holds NaN/inf or overflows"
        raise NonFiniteActionError(f"the model produced a non-finite action for environment slot(s) {bad} at {when}; "
                                   f"nothing was sent to the environment ({cause})")
