"""The MTM training loss: per-token losses from each tokenizer, averaged per modality, weighted sum.

Which tokens count: on="all", every real token, visible or hidden (the reference recipe: reconstructing
the visible tokens too is a cheap auxiliary task that the official code trains on); on="masked", only
the hidden ones, as in MAE. Tokens of padded steps (valid = False) never count, nor do those of a
modality the sample's episode lacks (``present_<modality>``, mtm.model.masks.present_tokens). Each
modality's loss is the mean over its counted tokens (0 when it has none, never NaN). Only the
modalities in model_out are trained: input-only ones (images without reconstruction, an MLP
baseline's states and returns) have no loss and no entry.

The value head (model.value_expectile = tau > 0) is scored on the hidden return tokens only (a shown
return would only be copied) by the expectile loss |tau - 1(u < 0)| u^2 with u = target - prediction
(IQL's value loss): at tau = 0.5 it is half the MSE, above 0.5 under-estimates cost more than
over-estimates, so the head learns an upper expectile of the return the data reached from there.

The reward head (model.reward_head) reads the action tokens and predicts the step's reward r_t, the
reward for a_t in s_t, z-scored by the data's reward statistics (``reward_units``, a tokenizer the
model keeps; the return token's own units can put rewards tens of stds from its mean): squared error
on every counted action token of a step whose episode has rewards, visible or hidden, as the token
losses with on="all". Mode plan sums it over imagined steps.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from mtm.errors import ConfigError
from mtm.model.masks import TokenLayout, present_tokens
from mtm.model.tokenizers import Tokenizer

VALUE = "value"  # the value head's name among a model's heads and outputs and the loss's parts
REWARD = "reward"  # the reward head's name, likewise


def expectile_loss(prediction: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """Elementwise |tau - 1(u < 0)| u^2, u = target - prediction."""
    u = target - prediction
    return torch.where(u < 0, 1.0 - tau, tau) * u.square()


def mtm_loss(model_out: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
             tokenizers: Mapping[str, Tokenizer], visible: torch.Tensor, valid: torch.Tensor | None, *,
             on: str = "all", weights: Mapping[str, float] | None = None,
             value_expectile: float = 0.0, reward_units: Tokenizer | None = None,
             token_weights: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """-> (total scalar, {modality: scalar}).

    model_out: {modality: (B, L, k, output_dim)} from MTM.forward. batch: raw tensors.
    visible: (N,) or (B, N) bool, True = VISIBLE (the mask the model was given).
    valid: (B, L) bool, False on padded steps; None = every step real.
    weights: {modality or "value": weight}; those not named weigh 1.
    value_expectile: tau of the value head's loss, when model_out has one.
    reward_units: the tokenizer of the reward head's targets, when model_out has one (MTM.reward_units).
    token_weights: {modality: (B, L)} weights of that modality's per-step token losses (e.g. the
    actions' advantage weights, MTM.action_weights); the loss stays a sum over the counted tokens
    divided by their count, so weights of mean 1 keep its scale.
    """
    if on not in ("all", "masked"):
        raise ConfigError(f"loss 'on' must be 'all' or 'masked', got {on!r}")
    weights = dict(weights or {})
    unknown = set(weights) - set(tokenizers) - {VALUE, REWARD}
    if unknown:
        raise ConfigError(f"loss weights name unknown modalities {sorted(unknown)}; have {list(tokenizers)}")

    predicted = [name for name in tokenizers if name in model_out]
    if not predicted:
        raise ConfigError(f"the model predicts none of {list(tokenizers)}: nothing to train")
    first = model_out[predicted[0]]
    b, length = first.shape[:2]
    layout = TokenLayout.from_tokenizers(tokenizers, length)
    device = first.device
    counted = torch.ones(b, layout.num_tokens, dtype=torch.bool, device=device)
    if valid is not None:
        counted &= layout.token_valid(valid.to(device))
    if on == "masked":
        counted &= ~visible.to(device).bool().expand(b, -1)
    present = present_tokens(layout, batch)
    if present is not None:  # what an episode lacks is never scored, visible or not
        counted &= present.to(device)

    total = first.new_zeros((), dtype=torch.float32)
    per_modality = {}
    for name, tok in tokenizers.items():
        if name not in model_out:
            continue  # an input-only modality (images without reconstruction, an MLP's states)
        head, targets = model_out[name], tok.targets(batch[name].to(device))
        use = counted[:, layout.slice(name)].view(head.shape[:3])  # (B, L, k)
        # Select the counted tokens before computing their losses, rather than multiplying by a
        # 0/1 mask afterwards: an uncounted token (padding) may hold NaN, and 0 * NaN = NaN, in the
        # forward pass and in the gradient.
        per_token = tok.token_loss(head[use], targets[use])
        if token_weights and name in token_weights:
            w = token_weights[name].to(device)[:, :, None].expand(use.shape)[use]
            per_token = per_token * w.view(-1, *[1] * (per_token.dim() - 1))
        loss = per_token.sum() / use.sum().clamp_min(1)
        per_modality[name] = loss
        total = total + float(weights.get(name, 1.0)) * loss
    if VALUE in model_out:
        if not 0.0 < value_expectile < 1.0:
            raise ConfigError(f"the value head needs an expectile in (0, 1), got {value_expectile}")
        head, targets = model_out[VALUE], tokenizers["returns"].targets(batch["returns"].to(device))
        sl = layout.slice("returns")
        use = (counted[:, sl] & ~visible.to(device).bool().expand(b, -1)[:, sl]).view(head.shape[:3])
        loss = expectile_loss(head[use].float(), targets[use], value_expectile).mean(-1)
        loss = loss.sum() / use.sum().clamp_min(1)
        per_modality[VALUE] = loss
        total = total + float(weights.get(VALUE, 1.0)) * loss
    if REWARD in model_out:
        if "rewards" not in batch or reward_units is None:
            raise ConfigError("the reward head needs the batch's per-step rewards (the sampler's key 'rewards') "
                              "and the model's reward units")
        head = model_out[REWARD]
        targets = reward_units.targets(batch["rewards"].to(device))
        use = counted[:, layout.slice("actions")]
        if "present_rewards" in batch:  # an episode without rewards has nothing to predict
            use = use & batch["present_rewards"].to(device).bool()[:, None]
        use = use.view(head.shape[:3])
        loss = (head[use].float() - targets[use]).square().mean(-1)
        loss = loss.sum() / use.sum().clamp_min(1)
        per_modality[REWARD] = loss
        total = total + float(weights.get(REWARD, 1.0)) * loss
    return total, per_modality
