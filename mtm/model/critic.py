"""IQL's critic (Kostrikov et al. 2022): twin Q, expectile V and Polyak-averaged target Qs.

Shared by the `mlp-iql` baseline (mtm.model.iql, which adds an actor) and by an MTM trained with
`model.critic: true`, whose planner (mode plan, mtm.planning) scores candidate actions with Q.
One step of `losses` on a batch of transitions (s, a, r, s', done), every input already in the
networks' units (normalised states, actions in [-1, 1], scaled rewards):

    V(s)      expectile regression (tau) on min(Q1', Q2')(s, a), the target Q
    Q1, Q2    squared error to r + discount * (1 - done) * V(s'), V as it was before this step
    Q1', Q2'  move `polyak` of the way towards Q1, Q2 after every optimiser step (`update_targets`)

The targets are detached, so each loss reaches only its own network: one backward pass of their
sum gives the updates of separate optimisers taken in turn, as in CORL's implementation. Always in
fp32 (the callers disable autocast): with IQL's reward scale Q and V reach ~100, where bf16 keeps
~0.4, which would dominate the advantages the actor and the planner compare.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from mtm.model.loss import expectile_loss


EXP_ADV_MAX = 100.0  # IQL's clip of the advantage weight exp(beta * A)
CRITIC_PARTS = ("q", "v")  # the critic's loss parts, logged as train/loss_q and train/loss_v
STATE_EPS = 1e-3  # added to the state std, as CORL's normalisation does
REWARD_SCALE_STEPS = 1000  # rewards are scaled so that the return range spans this (D4RL's episode length)


def reward_scale(episode_returns: np.ndarray, normalize: bool = True) -> float:
    """IQL's reward scale on D4RL locomotion: 1000 / (best - worst episode return), so that Q and V
    live on the same scale whatever the task's rewards; 1 without `normalize` or a usable range.
    Episodes without rewards (NaN returns) are left out."""
    returns = np.asarray(episode_returns, np.float64)
    returns = returns[np.isfinite(returns)]
    if normalize and returns.size and returns.max() > returns.min():
        return REWARD_SCALE_STEPS / float(returns.max() - returns.min())
    return 1.0


def action_bounds(data, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high), each (dim,): the bounded action space of `data` (a Trajectories), else the range
    of its actions; a constant dimension still gets a range of 1."""
    space = data.info.action_space or {}
    low = np.asarray(space.get("low", []), np.float64).reshape(-1)
    high = np.asarray(space.get("high", []), np.float64).reshape(-1)
    if low.shape != (dim,) or high.shape != (dim,) or not (np.isfinite(low).all() and np.isfinite(high).all()):
        actions = data.arrays["actions"][data.rows_with("actions")]  # no bounded space: the data's range
        low, high = (actions.min(0), actions.max(0)) if len(actions) else (-np.ones(dim), np.ones(dim))
    high = np.where(high > low, high, low + 1.0)
    return torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)


def normalized_states(raw: torch.Tensor, tokenizer) -> torch.Tensor:
    """Raw states -> IQL's inputs: z-scored by the training data's mean and std + STATE_EPS."""
    return (raw.float() - tokenizer.mean) / (tokenizer.std + STATE_EPS)


def unit_actions(raw: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Raw actions -> [-1, 1] over the bounds (IQL's actor range, and its critics' inputs)."""
    half = (high - low) / 2
    return (raw.float() - low - half) / half


class CriticValues:
    """Q and V of raw states and actions, for a model holding a TwinCritic as `critic` beside the
    `tokenizers["states"]`, `action_low` / `action_high` and `reward_scale` it was fitted with: the
    MTM with model.critic (its planner) and mlp-iql (its actor) alike, so that one check
    (mtm.evaluation.critic) reads both."""

    def critic_states(self, raw: torch.Tensor) -> torch.Tensor:
        return normalized_states(raw, self.tokenizers["states"])

    def critic_actions(self, raw: torch.Tensor) -> torch.Tensor:
        return unit_actions(raw, self.action_low, self.action_high)

    @torch.no_grad()
    def q_value(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """min(Q1', Q2') of raw states (..., S) and actions (..., A) -> (...), in the critic's units
        (rewards times reward_scale, discounted)."""
        with torch.autocast(states.device.type, enabled=False):
            return self.critic.target_q(self.critic_states(states), self.critic_actions(actions))

    @torch.no_grad()
    def state_value(self, states: torch.Tensor) -> torch.Tensor:
        """The critic's expectile V of raw states (..., S) -> (...), in the units of q_value."""
        with torch.autocast(states.device.type, enabled=False):
            return self.critic.v(self.critic_states(states))[..., 0]


def mlp(in_dim: int, width: int, layers: int, out_dim: int) -> nn.Sequential:
    """`layers` hidden Linear + ReLU layers of `width`, then a Linear to `out_dim`."""
    parts: list[nn.Module] = []
    for _ in range(layers):
        parts += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    parts.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*parts)


def advantage_weights(advantage: torch.Tensor, beta: float) -> torch.Tensor:
    """IQL's actor weights exp(beta * A), clipped at EXP_ADV_MAX (mlp-iql's actor, model.awr_beta)."""
    return torch.exp(beta * advantage).clamp(max=EXP_ADV_MAX)


class TwinCritic(nn.Module):
    """IQL's critic with `qs` Q networks (2: IQL's twin Q; more: an ensemble whose minimum is more
    pessimistic where they disagree, i.e. away from the data, as SAC-N / EDAC use it). Q1 and Q2
    keep their names (q1, q2; the others are extra_q.*), so older checkpoints load."""

    def __init__(self, state_dim: int, action_dim: int, width: int, layers: int, *, expectile: float,
                 discount: float, polyak: float, qs: int = 2) -> None:
        super().__init__()
        if qs < 2:
            raise ValueError(f"a critic needs at least 2 Q networks, got {qs}")
        self.expectile, self.discount, self.polyak = expectile, discount, polyak
        self.q1, self.q2 = mlp(state_dim + action_dim, width, layers, 1), mlp(state_dim + action_dim, width, layers, 1)
        self.extra_q = nn.ModuleList(mlp(state_dim + action_dim, width, layers, 1) for _ in range(qs - 2))
        self.v = mlp(state_dim, width, layers, 1)
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.extra_q_target = copy.deepcopy(self.extra_q).requires_grad_(False)

    def _qs(self) -> list[nn.Module]:
        return [self.q1, self.q2, *self.extra_q]

    def _targets(self) -> list[nn.Module]:
        return [self.q1_target, self.q2_target, *self.extra_q_target]

    def target_q(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The minimum of the target Qs at (s, a): (..., S), (..., A) -> (...)."""
        sa = torch.cat([s, a], -1)
        return torch.stack([q(sa)[..., 0] for q in self._targets()]).amin(0)

    def losses(self, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q loss, v loss, advantage Q' - V (detached)) on transitions t = {"s", "a", "r", "s_next",
        "done", "keep"}; the losses are means over the transitions with keep = True (the q loss
        also over the Q networks: with two, IQL's (err1^2 + err2^2) / 2)."""
        weight = t["keep"].float()
        count = weight.sum().clamp_min(1.0)
        s, a = t["s"], t["a"]
        sa = torch.cat([s, a], -1)
        with torch.no_grad():
            target_q = self.target_q(s, a)
            next_v = self.v(t["s_next"])[..., 0]
        v = self.v(s)[..., 0]
        v_loss = (expectile_loss(v, target_q, self.expectile) * weight).sum() / count
        q_target = t["r"] + self.discount * (1.0 - t["done"]) * next_v
        qs = self._qs()
        q_err = sum((q(sa)[..., 0] - q_target).square() for q in qs)
        q_loss = (q_err / len(qs) * weight).sum() / count
        return q_loss, v_loss, (target_q - v).detach()

    @torch.no_grad()
    def update_targets(self) -> None:
        """The target Qs move `polyak` of the way towards Q1, Q2."""
        for target, online in zip(self._targets(), self._qs()):
            torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), self.polyak)


def window_transitions(batch, states, actions, scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """The (s, a, r, s', done) transitions inside a batch of L-step windows (mtm.data.windows), as
    TwinCritic.losses takes them, flattened to (B * L,): step t's successor is step t + 1 of the
    same window. A step counts (`keep`) if it is real and its successor is too, or it needs none
    (done: the last step of an episode that ended by a fall). The window's last step has no
    successor inside it, so it counts only when done; the last step of an episode that timed out
    or was cut short never counts (no s' in the data, as D4RL's qlearning_dataset drops it). Steps
    of episodes without actions or rewards never count. `states`, `actions`: raw -> network units;
    `scale`: the reward scale."""
    valid = batch["valid"].bool()  # (B, L)
    done = batch["terminals"][..., 0].float()  # (B, L)
    successor = torch.cat([valid[:, 1:], torch.zeros_like(valid[:, :1])], 1)
    keep = valid & (successor | (done > 0))
    for key in ("present_actions", "present_rewards"):
        if key in batch:
            keep = keep & batch[key].bool()[:, None]
    s = states(batch["states"])
    s_next = torch.cat([s[:, 1:], torch.zeros_like(s[:, :1])], 1)  # read only where keep and not done

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(0, 1)

    return {"s": flat(s), "a": flat(actions(batch["actions"])), "r": flat(batch["rewards"][..., 0].float() * scale),
            "s_next": flat(s_next), "done": flat(done), "keep": flat(keep)}


def kept_only(t: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The transitions with keep = True alone (keep then all True): the losses are the same, and
    the networks run on those rows only (in 2-step windows about half of the rows are kept)."""
    rows = t["keep"].nonzero().squeeze(1)
    return {key: value.index_select(0, rows) for key, value in t.items()}
