"""Implicit Q-learning (IQL, Kostrikov et al. 2022), the offline-RL baseline `mlp-iql`.

Three MLPs on (s, a, r, s', done) transitions, trained together every step:

    V(s)      expectile regression (tau = model.iql_expectile) on min(Q1', Q2')(s, a), the target Q
    Q1, Q2    squared error to r + discount * (1 - done) * V(s'), V as it was before this step
    actor     advantage-weighted regression on the data's action a, weights exp(beta * (Q' - V)),
              clipped at 100: a deterministic tanh actor (weighted squared error) or a Gaussian one
              (weighted log-likelihood), model.iql_deterministic
    Q1', Q2'  Polyak averages of Q1, Q2 (model.iql_polyak), after every optimiser step

All three losses are computed from the same pre-step networks and each reaches only its own
network (the targets are detached), so one backward pass of their sum and one Adam step give the
updates of three separate optimisers taken in turn, as in CORL's implementation. The learning-rate
schedule (train.lr, cosine to 0 at train.steps) applies to the actor; Q and V keep train.lr
(`optim_groups` marks them `constant_lr`), as CORL schedules only the actor.

Data: windows of two steps (data.window = 2) starting at every step of an episode
(`WindowSampler(every_step=True)`) give s, a, r from the first step and s' from the second. The
"terminals" flag (mtm.data.trajectories) marks the last step of an episode that ended by
termination (a fall): done = 1 there and s' is never read. The last step of an episode that timed
out, or was cut short, has no successor in the data: it is dropped from every loss (D4RL's
`qlearning_dataset` drops it too). States are z-scored with the training data's mean and std
(+ 1e-3), actions mapped from the action space's bounds to [-1, 1], and rewards, with
model.iql_normalize_reward, scaled by 1000 / (max - min episode return of the training split) as
IQL does on D4RL locomotion (`fit_to_data` sets the scale and the bounds; they are buffers, so
checkpoints carry them).

It speaks `TokenModel` (tokenizers, spec / from_spec, forward / predict of per-step actions), so
`mtm train`, checkpoints, the policy (mode bc: the action from the current state) and `mtm eval`
treat it like the other MLP baselines; `training_loss` and `after_optimizer_step` are the two
hooks mtm.training.step calls instead of the masked-token loss.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import nn

from mtm.errors import ConfigError
from mtm.model.critic import (CriticValues, TwinCritic, action_bounds, advantage_weights, mlp, reward_scale,
                              window_transitions)
from mtm.model.network import ModelConfig, TokenModel
from mtm.model.tokenizers import ContinuousTokenizer, Tokenizer

IQL_KIND = "mlp_iql"
#: The window keys a transition needs (mtm.training.run_data samples these for model.kind = mlp_iql).
TRANSITION_KEYS = ("states", "actions", "rewards", "terminals")
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0  # the Gaussian actor's log-std range (CORL's)


class IQLModel(CriticValues, TokenModel):
    outputs = ("q", "v", "actor")  # the loss parts logged as train/loss_q, train/loss_v, train/loss_actor
    policy_modes = ("bc",)
    prediction_tasks = ("bc",)
    fp32_only = "IQL's Q and V reach ~100, where bf16 keeps ~0.4 and would skew the advantage weights"

    def __init__(self, config: ModelConfig, tokenizers: Mapping[str, Tokenizer], window: int):
        if config.kind != IQL_KIND:
            raise ConfigError(f"IQLModel builds {IQL_KIND}, not {config.kind!r}")
        if window != 2:
            raise ConfigError(f"model.kind={IQL_KIND} learns from (s, a, r, s') transitions: set data.window=2, "
                              f"got {window}")
        if not all(isinstance(tokenizers.get(m), ContinuousTokenizer) for m in ("states", "actions")):
            raise ConfigError(f"model.kind={IQL_KIND} takes continuous states and actions only "
                              f"(tokens.states/actions: continuous)")
        super().__init__(config, tokenizers, window)
        s, a, w, n = tokenizers["states"].dim, tokenizers["actions"].dim, config.width, config.mlp_layers
        self.actor = mlp(s, w, n, a)
        self.log_std = None if config.iql_deterministic else nn.Parameter(torch.zeros(a))
        self.critic = TwinCritic(s, a, w, n, expectile=config.iql_expectile, discount=config.iql_discount,
                                 polyak=config.iql_polyak)
        # Checkpoints written before the critic was shared with MTM name its networks q1., q2., v., ...
        self.register_load_state_dict_pre_hook(_critic_keys_moved)
        self.register_buffer("reward_scale", torch.ones(()))
        self.register_buffer("action_low", -torch.ones(a))
        self.register_buffer("action_high", torch.ones(a))

    # -- data-dependent constants --------------------------------------------------------------

    def fit_to_data(self, data) -> None:
        """Set the reward scale and the action bounds from the training split (a
        mtm.data.trajectories.Trajectories); called once, on a new model."""
        self.reward_scale.fill_(reward_scale(data.episode_returns(), self.config.iql_normalize_reward))
        low, high = action_bounds(data, self.action_low.shape[0])
        self.action_low.copy_(low)
        self.action_high.copy_(high)

    # -- units (states and actions into the critic's and the actor's: CriticValues) ---------------

    def _raw_actions(self, unit: torch.Tensor) -> torch.Tensor:
        half = (self.action_high - self.action_low) / 2
        return self.action_low + half + unit * half

    def _actor_mean(self, states: torch.Tensor) -> torch.Tensor:
        """Normalised states (..., S) -> the actor's action in [-1, 1] (the Gaussian's mean)."""
        return torch.tanh(self.actor(states))

    # -- TokenModel ----------------------------------------------------------------------------

    def forward(self, batch: Mapping[str, torch.Tensor], visible: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, *, heads: Collection[str] | None = None,
                queries: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"actions": (B, L, 1, act_dim)} in raw units: each step's action from that step's state
        (the Gaussian actor's mean; masks and queries are ignored, as by the other MLP baselines)."""
        states = batch["states"]
        with torch.autocast(states.device.type, enabled=False):  # fp32 always (see training_loss)
            return {"actions": self._raw_actions(self._actor_mean(self.critic_states(states))).unsqueeze(2)}

    @torch.no_grad()
    def predict(self, batch: Mapping[str, torch.Tensor], visible: torch.Tensor | None = None,
                valid: torch.Tensor | None = None, *, heads: Collection[str] | None = None,
                queries: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return {"actions": self.forward(batch)["actions"].squeeze(2)}

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """The actor (first: its rate is the one train/lr logs) follows the run's schedule and takes
        train.weight_decay; Q and V keep train.lr throughout (`constant_lr`, read by
        mtm.training.optim.build_scheduler) and are never decayed (CORL decays neither, as for an
        MTM's critic, mtm.model.network)."""
        actor = list(self.actor.parameters()) + ([self.log_std] if self.log_std is not None else [])
        critics = [p for p in self.critic.parameters() if p.requires_grad]
        return [{"params": actor, "weight_decay": float(weight_decay)},
                {"params": critics, "weight_decay": 0.0, "constant_lr": True}]

    # -- training (mtm.training.step) ----------------------------------------------------------

    def transitions(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The (s, a, r, s', done) transitions of a batch of two-step windows, in the units the
        networks see, and `keep` (B,) bool: whether each one counts in the losses. They are the
        windows' first steps as an MTM's critic takes them (`window_transitions`, one rule for both):
        a transition counts if its successor is in the window or none is needed (done: a fall); the
        last step of an episode that timed out or was cut short has neither and is dropped, as are
        steps of episodes without actions or rewards."""
        t = window_transitions(batch, self.critic_states, self.critic_actions, self.reward_scale)
        b = batch["states"].shape[0]
        return {key: value.unflatten(0, (b, -1))[:, 0] for key, value in t.items()}

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(q + v + actor, {"q", "v", "actor"}) on a batch of two-step windows (mtm.data.windows),
        each the mean over the transitions that count (`transitions`). Always in fp32, whatever
        train.precision says: Q and V reach ~100 with IQL's reward scale, where bf16 keeps ~0.4,
        and beta = 3 would turn that rounding of the advantage into weights off by a factor ~3."""
        with torch.autocast(batch["states"].device.type, enabled=False):
            return self._losses(batch)

    def _losses(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg, t = self.config, self.transitions(batch)
        s, a = t["s"], t["a"]
        weight = t["keep"].float()
        count = weight.sum().clamp_min(1.0)

        def mean(x: torch.Tensor) -> torch.Tensor:
            return (x * weight).sum() / count

        q_loss, v_loss, advantage = self.critic.losses(t)
        exp_adv = advantage_weights(advantage, cfg.iql_beta)
        mu = self._actor_mean(s)
        if self.log_std is None:
            bc = (mu - a).square().sum(-1)
        else:
            std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
            bc = -torch.distributions.Normal(mu, std).log_prob(a).sum(-1)
        actor_loss = mean(exp_adv * bc)
        parts = {"q": q_loss, "v": v_loss, "actor": actor_loss}
        return q_loss + v_loss + actor_loss, parts

    def after_optimizer_step(self) -> None:
        """The target Q moves iql_polyak of the way towards Q."""
        self.critic.update_targets()


_CRITIC_PARTS = ("q1.", "q2.", "v.", "q1_target.", "q2_target.")


def _critic_keys_moved(module, state_dict, prefix, *args) -> None:
    """Rename an older checkpoint's q1.*, q2.*, v.*, q1_target.*, q2_target.* to critic.*."""
    for key in [k for k in state_dict if k.startswith(prefix) and k[len(prefix):].startswith(_CRITIC_PARTS)]:
        state_dict[prefix + "critic." + key[len(prefix):]] = state_dict.pop(key)
