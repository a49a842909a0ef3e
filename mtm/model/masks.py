"""Token layout and masks.

    *** A mask is a bool tensor, shape (B, N) or (N,) (broadcast over the batch).           ***
    *** True = VISIBLE: the token's value is shown to the encoder.                          ***
    *** False = HIDDEN: the network sees only a learned mask token there and predicts it.   ***

A mask is data, never a code path: every task is a different bool tensor given to the same network.
Tokens are modality-major, then time, then sub-token: index(m, t, j) = offset[m] + t * k[m] + j.
Roles, in the autoregressive order states -> returns -> actions: "actions" and "returns" are
themselves, every other modality (states, images) is an observation, masked like states. The
inference masks decide per step (all k tokens alike) and take the current step c (an int, or a (B,)
tensor: one c per sample when environments have histories of different lengths); steps after c are
the future and hidden. Padded steps (valid = False) are hidden by `apply_valid`, which the network
also applies itself.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mtm.errors import ConfigError
from mtm.policy_config import POLICY_MODES

ROLES = ("states", "returns", "actions")  # also the autoregressive order
DEFAULT_KEEP_RATIOS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DEFAULT_ROLE_WEIGHTS = {"states": 0.2, "returns": 0.1, "actions": 0.7}


class TokenLayout:
    """Where each (modality, timestep, sub-token) sits in the flat token sequence of length N.
    ``whole_steps``: the modalities whose k tokens of a step the random training masks keep or hide
    together (an image frame's patches); they draw every other token on its own. ``roles``: the
    role (ROLES) of each modality not named after one, e.g. an image key's "states"; a modality with
    neither is an error, since every mask would silently treat it as some role."""

    def __init__(self, modalities: Sequence[tuple[str, int]], window: int, whole_steps: Collection[str] = (),
                 roles: Mapping[str, str] | None = None):
        names = [name for name, _ in modalities]
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"modality names must be unique and non-empty, got {names}")
        if window < 1:
            raise ConfigError(f"window must be >= 1, got {window}")
        unknown = set(whole_steps) - set(names)
        if unknown:
            raise ConfigError(f"whole_steps names unknown modalities {sorted(unknown)}; have {names}")
        self.window = int(window)
        self.names = names
        self.whole_steps = frozenset(whole_steps)
        self.tokens_per_step = {name: int(k) for name, k in modalities}
        self.offsets: dict[str, int] = {}
        modality, timestep, sub = [], [], []
        for m, (name, k) in enumerate(modalities):
            if k < 1:
                raise ConfigError(f"modality {name!r}: tokens_per_step must be >= 1, got {k}")
            self.offsets[name] = len(modality)
            modality += [m] * (window * k)
            timestep += [t for t in range(window) for _ in range(k)]
            sub += list(range(k)) * window
        self.num_tokens = len(modality)
        # (N,) int64 tables: the modality index, timestep and sub-token index of every token.
        self.modality = torch.tensor(modality, dtype=torch.long)
        self.timestep = torch.tensor(timestep, dtype=torch.long)
        self.sub = torch.tensor(sub, dtype=torch.long)
        self.roles = {name: _role_of(name, roles or {}) for name in names}  # modality -> its role in the masks
        role_index = torch.tensor([ROLES.index(self.roles[name]) for name in names])
        self.role_rank = role_index[self.modality]  # (N,) 0 = states, 1 = returns, 2 = actions

    @classmethod
    def from_tokenizers(cls, tokenizers: Mapping[str, object], window: int) -> "TokenLayout":
        whole = [name for name, tok in tokenizers.items() if getattr(tok, "mask_whole_steps", False)]
        roles = {name: tok.mask_role for name, tok in tokenizers.items() if getattr(tok, "mask_role", None)}
        return cls([(name, tok.tokens_per_step) for name, tok in tokenizers.items()], window, whole, roles)

    def slice(self, name: str) -> slice:
        start = self.offsets[name]
        return slice(start, start + self.window * self.tokens_per_step[name])

    def index(self, name: str, t: int, j: int = 0) -> int:
        """The flat index of sub-token j of modality `name` at timestep t."""
        k = self.tokens_per_step[name]
        if not (0 <= t < self.window and 0 <= j < k):
            raise IndexError(f"({name}, t={t}, j={j}) is outside a window of {self.window} x {k}")
        return self.offsets[name] + t * k + j

    def role(self, role: str) -> torch.Tensor:
        """(N,) bool: the tokens of every modality with this role."""
        return self.role_rank == ROLES.index(role)

    def token_valid(self, valid: torch.Tensor) -> torch.Tensor:
        """(B, L) per-step validity -> (B, N) per-token validity."""
        return valid.bool()[:, self.timestep.to(valid.device)]

    def format(self, mask: torch.Tensor) -> str:
        """One mask row as text, e.g. 'states ##.. | actions #...' (# visible, . hidden)."""
        mask = mask.reshape(-1, self.num_tokens)[0].tolist()
        parts = []
        for name in self.names:
            sl, k = self.slice(name), self.tokens_per_step[name]
            cells = ["#" if v else "." for v in mask[sl]]
            steps = ["".join(cells[t * k : (t + 1) * k]) for t in range(self.window)]
            parts.append(f"{name} {' '.join(steps) if k > 1 else ''.join(steps)}")
        return " | ".join(parts)


def _role_of(name: str, roles: Mapping[str, str]) -> str:
    role = roles.get(name, name)
    if role not in ROLES:
        raise ConfigError(f"modality {name!r} has no role in the masks ({', '.join(ROLES)}): name it after one, "
                          f"or give its tokenizer a mask_role (an image's is 'states')")
    return role


def apply_valid(mask: torch.Tensor, valid: torch.Tensor | None, layout: TokenLayout) -> torch.Tensor:
    """Hide every token of a padded step: (N,) or (B, N) mask & (B, L) valid -> (B, N)."""
    if valid is None:
        return mask.bool()
    return mask.bool().to(valid.device) & layout.token_valid(valid)


# Missing modalities (docs/architecture.md): a batch's `present_<modality>` (B,) flags say which
# samples' episodes lack actions or rewards; those tokens are never visible and never scored.

PRESENT_PREFIX = "present_"


def present_tokens(layout: TokenLayout, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    """(B, N) bool: False at every token of a modality the sample's episode lacks; None when the
    batch marks nothing as absent (complete data: callers then skip the AND entirely)."""
    flags = [(name, batch[PRESENT_PREFIX + name]) for name in layout.names if PRESENT_PREFIX + name in batch]
    if not flags:
        return None
    b, device = flags[0][1].shape[0], flags[0][1].device
    present = torch.ones(b, layout.num_tokens, dtype=torch.bool, device=device)
    for name, has in flags:
        present[:, layout.slice(name)] = has.to(device).bool()[:, None]
    return present


def hide_absent(mask: torch.Tensor, layout: TokenLayout, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The mask with every token of an absent modality hidden, per sample ((N,) or (B, N) -> (B, N));
    unchanged (the same tensor) for a batch that marks nothing as absent. A row left with nothing
    visible shows its first observation (as every training mask guarantees)."""
    present = present_tokens(layout, batch)
    if present is None:
        return mask
    hidden = mask.to(present.device).bool().expand_as(present) & present
    return _ensure_visible(hidden.clone(), layout)


# Inference masks. Each returns (N,) for an int c and (B, N) for a (B,) tensor c.


def _current(layout: TokenLayout, c, latest: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps and c, shaped to broadcast: (N,) with () or (1, N) with (B, 1)."""
    c = torch.as_tensor(c, dtype=torch.long).cpu()  # masks are built on the CPU (they are tiny)
    if c.dim() > 1 or (c.numel() and (c.min() < 0 or c.max() > latest)):
        raise ValueError(f"current step c must lie in [0, {latest}] for window {layout.window}: {c.tolist()}")
    t = layout.timestep
    return (t, c) if c.dim() == 0 else (t[None, :], c[:, None])


def bc_mask(layout: TokenLayout, c=None) -> torch.Tensor:
    """Behaviour cloning. Visible: observations at 0..c, actions at 0..c-1. Hidden: returns, the rest.
    The action to take is the (hidden) action token at c. c defaults to L-1."""
    t, c = _current(layout, layout.window - 1 if c is None else c, layout.window - 1)
    return (layout.role("states") & (t <= c)) | (layout.role("actions") & (t < c))


def rcbc_mask(layout: TokenLayout, c=None, returns: str = "all") -> torch.Tensor:
    """Return-conditioned BC: `bc_mask` plus the return tokens at every step (returns="all", the
    reference eval: the target return is written at all L positions) or at 0..c ("history")."""
    if returns not in ("all", "history"):
        raise ConfigError(f"rcbc returns must be 'all' or 'history', got {returns!r}")
    c = layout.window - 1 if c is None else c
    t, cc = _current(layout, c, layout.window - 1)
    shown = layout.role("returns") if returns == "all" else layout.role("returns") & (t <= cc)
    return bc_mask(layout, c) | shown


def forward_dynamics_mask(layout: TokenLayout, c=None) -> torch.Tensor:
    """Forward dynamics. Visible: observations and actions at 0..c. Predict the observation at c+1
    (needs c+1 < L). Returns and everything after c hidden. c defaults to L-2."""
    t, c = _current(layout, layout.window - 2 if c is None else c, layout.window - 2)
    return (layout.role("states") | layout.role("actions")) & (t <= c)


def inverse_dynamics_mask(layout: TokenLayout, c=None) -> torch.Tensor:
    """Inverse dynamics. Visible: observations at 0..c+1 (the history plus s_c and s_{c+1}) and
    actions at 0..c-1. Predict the action at c (needs c+1 < L). c defaults to L-2."""
    t, c = _current(layout, layout.window - 2 if c is None else c, layout.window - 2)
    return (layout.role("states") & (t <= c + 1)) | (layout.role("actions") & (t < c))


def goal_reaching_mask(layout: TokenLayout, c=None) -> torch.Tensor:
    """Goal reaching. Visible: observations at 0..c and the goal observation at L-1, actions at
    0..c-1. Predict the action at c (and the path to the goal). Returns hidden. c defaults to 0."""
    t, c = _current(layout, 0 if c is None else c, layout.window - 1)
    states = layout.role("states") & ((t <= c) | (t == layout.window - 1))
    return states | (layout.role("actions") & (t < c))


def without_action_history(mask: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """The view of a policy without action history (PolicyConfig.action_history = False): `mask`
    with every action token hidden, on the mask's device. Only the policy modes' masks
    (mtm.policy_config.POLICY_MODES) get it: in the policy, in the planner's proposals, in training
    and in validation alike."""
    return mask & ~layout.role("actions").to(mask.device)


def imputation_mask(layout: TokenLayout, timesteps: Sequence[int] | None = None) -> torch.Tensor:
    """Imputation. Visible: observations at the given timesteps (default: the first and the last);
    every action and return, and the other observations, hidden."""
    steps = [0, layout.window - 1] if timesteps is None else list(timesteps)
    if any(not 0 <= s < layout.window for s in steps):
        raise ValueError(f"imputation timesteps must lie in [0, {layout.window - 1}], got {steps}")
    at = torch.zeros(layout.window, dtype=torch.bool)
    at[steps] = True
    return layout.role("states") & at[layout.timestep]


# Training masks: a different pattern per sample, reproducible from a torch.Generator (CPU).


def _ensure_visible(mask: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Show the first modality at t = 0 (its first token, or all k if it is masked by whole steps)
    in any row with nothing visible. Step 0 is always a real step (windows start inside an
    episode), so apply_valid never hides it again."""
    first = layout.names[0]
    shown = layout.tokens_per_step[first] if first in layout.whole_steps else 1
    mask[:, :shown] |= ~mask.any(1, keepdim=True)
    return mask


def _random_keep(layout, batch_size, generator, keep_ratios) -> torch.Tensor:
    """Per sample and modality: keep floor(r * n + 1/2) of its n units, r drawn from keep_ratios,
    the kept units chosen uniformly. Exact counts (not Bernoulli) as in the official code. A unit is
    a token, or for a modality in layout.whole_steps the k tokens of one step (n = L units)."""
    _as_config_error(check_keep_ratios, keep_ratios)
    ratios = torch.as_tensor(keep_ratios, dtype=torch.float32)
    mask = torch.zeros(batch_size, layout.num_tokens, dtype=torch.bool)
    for name in layout.names:
        sl = layout.slice(name)
        k = layout.tokens_per_step[name] if name in layout.whole_steps else 1
        n = (sl.stop - sl.start) // k
        count = torch.floor(ratios[torch.randint(len(ratios), (batch_size,), generator=generator)] * n + 0.5)
        rank = torch.rand(batch_size, n, generator=generator).argsort(1).argsort(1)
        # Tokens of one step are adjacent (index = offset + t * k + j), so repeating each unit's
        # decision k times lays it over exactly that step's tokens.
        mask[:, sl] = (rank < count[:, None]).repeat_interleave(k, dim=1)
    return mask


def random_mask(layout: TokenLayout, batch_size: int, generator: torch.Generator,
                keep_ratios: Sequence[float] = DEFAULT_KEEP_RATIOS) -> torch.Tensor:
    """(B, N): each modality keeps a random fraction of its tokens, drawn per sample."""
    return _ensure_visible(_random_keep(layout, batch_size, generator, keep_ratios), layout)


def random_autoregressive_mask(layout: TokenLayout, batch_size: int, generator: torch.Generator,
                               keep_ratios: Sequence[float] = DEFAULT_KEEP_RATIOS,
                               role_weights: Mapping[str, float] = DEFAULT_ROLE_WEIGHTS) -> torch.Tensor:
    """(B, N): the MTM training mask. `random_mask`, then per sample a role (states / returns /
    actions, drawn by role_weights among the roles present) and a time t*: hide every token after
    t*, and at t* itself hide the chosen role and the roles after it in states -> returns -> actions.
    E.g. role = returns, t* = 1, L = 3: s0 s1 . | R0 . . | a0 . .  (before the random keep)."""
    _as_config_error(check_role_weights, role_weights)
    mask = _random_keep(layout, batch_size, generator, keep_ratios)
    present = [r for r in ROLES if bool(layout.role(r).any())]
    weights = torch.tensor([float(role_weights.get(r, 0.0)) for r in present])
    if weights.sum() <= 0:
        raise ConfigError(f"mask role_weights need a positive weight for one of the roles the model has "
                          f"{present}, got {dict(role_weights)}")
    ranks = torch.tensor([ROLES.index(r) for r in present])
    role = ranks[torch.multinomial(weights, batch_size, replacement=True, generator=generator)]
    t_star = torch.randint(layout.window, (batch_size,), generator=generator)
    t, q = layout.timestep[None, :], layout.role_rank[None, :]
    future = (t > t_star[:, None]) | ((t == t_star[:, None]) & (q >= role[:, None]))
    return _ensure_visible(mask & ~future, layout)


#: What each policy mode (mtm.policy_config.POLICY_MODES) shows the model at the current position c:
#: the one table mtm.policy reads. plan proposes with the RCBC view and imagines with its own
#: (mtm.planning). A mode whose mask shows return tokens conditions on a target return.
POLICY_MASKS: dict[str, Callable[..., torch.Tensor]] = {"bc": bc_mask, "rcbc": rcbc_mask, "plan": rcbc_mask,
                                                         "id": inverse_dynamics_mask}
#: The modes whose view shows the state after the current one (at c + 1, so c <= L - 2): the policy
#: first predicts it through NEXT_STATE_VIEW at c, then acts through the mode's own view.
NEXT_STATE_FIRST = frozenset({"id"})
NEXT_STATE_VIEW = bc_mask

# The inference masks as training modes: name -> (mask of a (B,) step c, s: c lies in 0 .. L - s).
_INFERENCE_MODES = {"bc": (POLICY_MASKS["bc"], 1), "rcbc": (POLICY_MASKS["rcbc"], 1),
                    "forward_dynamics": (forward_dynamics_mask, 2),
                    "inverse_dynamics": (inverse_dynamics_mask, 2), "goal_reaching": (goal_reaching_mask, 1)}
TRAINING_MODES = ("random", "random_autoregressive", *_INFERENCE_MODES, "imputation")


# The one check of each training-mask setting, shared by MaskConfig, MaskMixture and the random
# masks. ValueError "field ...", the config loader's convention (it names the section); the Python
# API raises it as ConfigError "mask field ...".


def check_modes(modes: Mapping[str, float]) -> None:
    unknown = sorted(set(modes) - set(TRAINING_MODES))
    if unknown:
        raise ValueError(f"modes: unknown mode(s) {unknown}; choose from {list(TRAINING_MODES)}")
    if not modes or any(w < 0 for w in modes.values()) or sum(modes.values()) <= 0:
        raise ValueError(f"modes: weights must be >= 0 with a positive sum, got {dict(modes)}")


def check_keep_ratios(keep_ratios: Sequence[float]) -> None:
    """A keep ratio r keeps floor(r * n + 1/2) of a modality's n tokens: 1 keeps all of them, and r
    must be above 0 (a ratio of 0 would hide the modality outright, and as the only ratio every token,
    leaving a sample nothing to condition on but the one token `_ensure_visible` shows)."""
    if not keep_ratios or any(not 0.0 < r <= 1.0 for r in keep_ratios):
        raise ValueError(f"keep_ratios must be in (0, 1], got {list(keep_ratios)}")


def check_role_weights(role_weights: Mapping[str, float]) -> None:
    unknown = sorted(set(role_weights) - set(ROLES))
    if unknown:
        raise ValueError(f"role_weights: keys must be among {list(ROLES)}, got {unknown}")
    if any(w < 0 for w in role_weights.values()) or sum(role_weights.values()) <= 0:
        raise ValueError(f"role_weights must be >= 0 with a positive sum, got {dict(role_weights)}")


def _as_config_error(check: Callable[[Any], None], value: Any) -> None:
    try:
        check(value)
    except ValueError as exc:
        raise ConfigError(f"mask {exc}") from None


@dataclass
class MaskConfig:
    """The training mask: a weighted mixture of modes, and the two knobs of the random ones."""

    modes: dict[str, float] = field(default_factory=lambda: {"random_autoregressive": 1.0})  # mask modes (TRAINING_MODES) and their weights, drawn per sample
    keep_ratios: list[float] = field(default_factory=lambda: list(DEFAULT_KEEP_RATIOS))  # random / random_autoregressive: each modality keeps a fraction of its tokens drawn from these, per sample
    role_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ROLE_WEIGHTS))  # random_autoregressive: how often the cut at t* starts at states / returns / actions
    action_history: bool = False  # bc / rcbc modes: show the actions at the window's earlier steps, as a policy with action_history does, or hide every action (the policy's default, PolicyConfig.action_history)

    def __post_init__(self) -> None:
        # ValueError "field ...": the config loader's convention (mtm.config), reported with the section.
        check_modes(self.modes)
        check_keep_ratios(self.keep_ratios)
        check_role_weights(self.role_weights)

    @classmethod
    def parse(cls, text: str) -> "MaskConfig":
        """The short string form: "random_autoregressive", or weighted "random_autoregressive:0.8,bc:0.2"
        (the other fields keep their defaults). ValueError if malformed."""
        modes: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, weight = part.partition(":")
            try:
                modes[name.strip()] = float(weight) if weight else 1.0
            except ValueError:
                raise ValueError(f"modes: a weight must be a number, got {part!r} in {text!r}") from None
        if not modes:
            raise ValueError(f"modes: none given; choose from {list(TRAINING_MODES)}")
        return cls(modes=modes)


class MaskMixture:
    """A weighted mixture of mask modes ({name from TRAINING_MODES: weight}), drawn for every sample,
    e.g. MaskMixture({"random_autoregressive": 0.8, "bc": 0.2}). The inference modes draw their
    current step c uniformly per sample; "imputation" shows the first and last observations."""

    def __init__(self, modes: Mapping[str, float], keep_ratios: Sequence[float] = DEFAULT_KEEP_RATIOS,
                 role_weights: Mapping[str, float] = DEFAULT_ROLE_WEIGHTS,
                 action_history: bool = MaskConfig.action_history):
        # MaskConfig's checks (ConfigError "mask ...", as for from_config's string form).
        _as_config_error(check_modes, modes)
        _as_config_error(check_keep_ratios, keep_ratios)
        _as_config_error(check_role_weights, role_weights)
        self.modes = dict(modes)
        self.keep_ratios = tuple(keep_ratios)
        self.role_weights = dict(role_weights)
        self.action_history = action_history

    @classmethod
    def from_config(cls, config: "MaskConfig | str") -> "MaskMixture":
        """The mixture a MaskConfig (or its string form, see MaskConfig.parse) describes."""
        if isinstance(config, str):
            try:
                config = MaskConfig.parse(config)
            except ValueError as exc:
                raise ConfigError(f"mask {exc}") from None
        return cls(config.modes, keep_ratios=config.keep_ratios, role_weights=config.role_weights,
                   action_history=config.action_history)

    def _one(self, mode: str, layout: TokenLayout, batch_size: int, generator: torch.Generator):
        if mode == "random":
            return random_mask(layout, batch_size, generator, self.keep_ratios)
        if mode == "random_autoregressive":
            return random_autoregressive_mask(layout, batch_size, generator, self.keep_ratios,
                                              self.role_weights)
        if mode == "imputation":
            return imputation_mask(layout).expand(batch_size, -1)
        fn, from_end = _INFERENCE_MODES[mode]
        if layout.window - from_end < 0:
            raise ConfigError(f"training mask {mode!r} needs a window of at least 2, got {layout.window}")
        mask = fn(layout, torch.randint(layout.window - from_end + 1, (batch_size,), generator=generator))
        if mode in POLICY_MODES and not self.action_history:
            mask = without_action_history(mask, layout)
        return mask

    def __call__(self, layout: TokenLayout, batch_size: int, generator: torch.Generator,
                 device=None) -> torch.Tensor:
        """(B, N) bool, True = VISIBLE, on `device` (generated on the CPU)."""
        names = list(self.modes)
        weights = torch.tensor([float(self.modes[n]) for n in names])
        choice = torch.multinomial(weights, batch_size, replacement=True, generator=generator)
        mask = torch.zeros(batch_size, layout.num_tokens, dtype=torch.bool)
        for i, name in enumerate(names):
            rows = choice == i
            if rows.any():
                mask[rows] = self._one(name, layout, int(rows.sum()), generator)
        mask = _ensure_visible(mask, layout)
        return mask.to(device) if device is not None else mask
