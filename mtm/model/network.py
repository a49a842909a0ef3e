"""The masked trajectory model: an MAE-style bidirectional Transformer over trajectory tokens.

    raw batch --tokenizers--> tokens (B, N) --embed--> encoder over the VISIBLE tokens only
      --> per-modality mask tokens fill the hidden places --> decoder over all real tokens
      --> per-modality heads (B, L, k, output_dim) --tokenizers--> raw predictions

Masks are per sample (True = VISIBLE), so samples have different numbers of visible tokens. The
selected tokens of all samples are PACKED into one (T, width) tensor for every per-token layer and
padded to (B, max_count, ...) with a key mask only inside attention (`Packing`; why, and the
figures: docs/model.md); the decoder packs the real tokens, so padded steps are neither computed nor
attended to. Every query may also attend to itself, so no attention row is ever fully masked (NaN).

A policy's act() (K <= ~10 samples, ~100 token rows) is dominated by per-op overhead, hence:
`queries` decodes only the tokens whose outputs are read; when every sample selects as many tokens,
padding is a reshape and attention runs unmasked (SDPA's faster path); predict runs under
inference_mode; eval-mode blocks skip their Dropout calls (BENCHMARKS.md, Evaluation). The decoder's
re-embedding (dec_embed) multiplies only the visible tokens' rows, in training (~4.6 of 12) as in act().
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mtm.errors import ConfigError
from mtm.model.critic import (CRITIC_PARTS, CriticValues, TwinCritic, action_bounds, advantage_weights, kept_only,
                              reward_scale, window_transitions)
from mtm.model.dropout import Dropout
from mtm.model.loss import REWARD, VALUE
from mtm.model.masks import TokenLayout, apply_valid, present_tokens
from mtm.model.tokenizers import Tokenizer, tokenizer_from_spec
from mtm.model.tokenizers.continuous import ContinuousTokenizer
from mtm.policy_config import POLICY_MODES, PREDICTION_TASK_NAMES


@dataclass
class ModelConfig:
    kind: Literal["mtm", "mlp_bc", "mlp_rcbc", "mlp_iql", "cnn_bc"] = "mtm"  # the MTM, an MLP baseline (mtm.model.mlp; mlp_iql: implicit Q-learning, mtm.model.iql) or the image baseline (mtm.model.cnn_bc)
    width: int = 512  # token embedding size (a baseline's hidden width)
    encoder_layers: int = 2  # Transformer blocks over the visible tokens
    decoder_layers: int = 1  # Transformer blocks over all tokens (visible + mask tokens)
    heads: int = 4  # attention heads; width must be divisible by heads
    dropout: float = 0.1  # on attention probabilities and on each residual branch
    ffn_mult: int = 4  # feed-forward hidden size = ffn_mult * width
    position_scale: float = 0.5  # fixed sin/cos encoding of the window position, times this (reference: 0.5)
    use_timestep_embedding: bool = False  # add a learned embedding of the absolute episode step
    max_timestep: int = 1000  # steps >= this share the last timestep embedding
    mlp_heads: bool = True  # heads Linear -> GELU -> Linear as the official code; False: one Linear
    mlp_layers: int = 3  # hidden layers of a baseline's MLP (model.kind = mlp_bc / mlp_rcbc / cnn_bc; mlp_iql: each of its networks)
    iql_expectile: float = 0.7  # mlp_iql and model.critic: tau of the expectile regression of V on the target Q, in (0, 1)
    iql_beta: float = 3.0  # mlp_iql: inverse temperature of the advantage-weighted actor (weights exp(beta * A), clipped at 100), > 0
    iql_discount: float = 0.99  # mlp_iql and model.critic: discount of the Q target r + discount * V(s'), in (0, 1]
    iql_polyak: float = 0.005  # mlp_iql and model.critic: the target Q moves this fraction towards Q after every step, in (0, 1]
    iql_deterministic: bool = True  # mlp_iql: a deterministic tanh actor (weighted squared error); false: a Gaussian with a learned state-independent std (weighted log-likelihood)
    iql_normalize_reward: bool = True  # mlp_iql and model.critic: scale rewards by 1000 / (best - worst training episode return), as IQL does on D4RL locomotion
    value_expectile: float = 0.0  # > 0: a value head on the return tokens trained by expectile regression at this tau (IQL's 0.7: an optimistic estimate of the return to go) on the hidden return tokens; mode plan scores with it. 0: none
    reward_head: bool = False  # a head on the action tokens predicting the step's reward r_t (squared error); mode plan sums it over imagined steps before the value (M3PC's score)
    fuse_observations: int = 0  # > 0: an MLP of this hidden width over each step's shown observations (the state and every camera's features, concatenated, hidden ones zeroed, with a shown flag each) adds its output to each of that step's observation tokens, so each sees the state and the frames together before any attention, as CNN-BC's MLP does; 0: each token embeds its own modality alone
    fuse_query: bool = False  # with fuse_observations: the fused observations of each step also added (through a Linear) to that step's action token entering the decoder, so the query that predicts an action starts from the step's state and frames rather than from a constant mask token
    critic: bool = False  # an IQL critic (twin Q, expectile V; the iql_* fields) trained by TD in the same run on the windows' (s, a, r, s') transitions, falls terminal; mode plan scores candidate actions by its Q (plan_score q)
    critic_width: int = 256  # model.critic: hidden width of each of its MLPs (CORL's IQL: 256)
    critic_layers: int = 2  # model.critic: hidden layers of each of its MLPs (CORL's IQL: 2)
    critic_qs: int = 2  # model.critic: its Q networks; the Q it acts and bootstraps on is their minimum (2: IQL's twin Q; more: an ensemble, more pessimistic where its members disagree, away from the data)
    awr_beta: float = 0.0  # model.critic: > 0 weighs each action token's reconstruction loss by exp(awr_beta * A), A = Q - V from the critic (clipped at 100, normalised to mean 1 over the batch): advantage-weighted regression, IQL's actor, inside the MTM; 0: every action weighs the same
    critic_updates: int = 1  # model.critic: its TD updates per training step, each on a batch of its own (the extra ones cost the critic's MLPs alone: a TD value needs many more updates than the Transformer's short run gives)

    def __post_init__(self) -> None:
        # ValueError "field must be ...": the config loader reports it as a ConfigError naming its source.
        if self.width < 2 or self.width % 2 or self.heads < 1 or self.width % self.heads:
            raise ValueError(f"width must be even and divisible by heads ({self.heads}), got {self.width}")
        for name in ("encoder_layers", "decoder_layers", "ffn_mult", "max_timestep", "mlp_layers", "critic_width",
                     "critic_layers", "critic_updates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.iql_expectile < 1.0:
            raise ValueError(f"iql_expectile must be in (0, 1), got {self.iql_expectile}")
        if not self.iql_beta > 0.0:
            raise ValueError(f"iql_beta must be > 0, got {self.iql_beta}")
        for name in ("iql_discount", "iql_polyak"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.critic_qs < 2:
            raise ValueError(f"critic_qs must be >= 2, got {self.critic_qs}")
        if not self.awr_beta >= 0.0:
            raise ValueError(f"awr_beta must be >= 0, got {self.awr_beta}")
        if self.awr_beta > 0 and not self.critic:
            raise ValueError("awr_beta weighs actions by the critic's advantage: set model.critic=true too")
        if self.fuse_observations < 0:
            raise ValueError(f"fuse_observations must be >= 0 (0 = off), got {self.fuse_observations}")
        if self.fuse_query and not self.fuse_observations:
            raise ValueError("fuse_query needs fuse_observations > 0 (it adds the fused observations to the action "
                             "tokens): set fuse_observations > 0, or fuse_query=false as well to turn fusion off")
        if not (self.value_expectile == 0.0 or 0.0 < self.value_expectile < 1.0):
            raise ValueError(f"value_expectile must be 0 (no value head) or in (0, 1), got {self.value_expectile}")




def head_modality(name: str) -> str:
    """The modality whose tokens a head reads."""
    return {VALUE: "returns", REWARD: "actions"}.get(name, name)


def head_units(name: str) -> str:
    """The modality whose tokenizer gives a head's units: the value head's are the returns', a
    modality head's its own. MTM.units decodes the reward head with its own statistics instead."""
    return "returns" if name == VALUE else name


def sincos_position_table(length: int, width: int) -> torch.Tensor:
    """(length, width): sin of the positions at geometric frequencies in the first half, cos in the second."""
    freq = 1.0 / 10000 ** (torch.arange(width // 2, dtype=torch.float64) / (width / 2))
    angle = torch.arange(length, dtype=torch.float64)[:, None] * freq[None, :]
    return torch.cat([angle.sin(), angle.cos()], 1).float()


class Packing:
    """The selected tokens of each sample: packed rows (T, ...) <-> padded (B, M, ...) for attention.

    `select` is (B, N) bool; selected tokens keep their order within a sample. When every token is
    selected (dense), packing is a reshape; when every sample selects as many tokens (uniform: a
    policy's K envs at the same step), padding is a reshape. Then attention needs no mask.
    """

    def __init__(self, select: torch.Tensor, *, static: bool = False, all_selected: bool = False,
                 groups: torch.Tensor | None = None, num_groups: int = 0):
        self.batch, self.length = select.shape
        self.group_counts: list[int] | None = None  # with `groups`: selected tokens of each group
        if static:
            # Every token is a row (dense) and a key mask keeps the unselected ones out of attention
            # (none where the caller knows every token is selected): fixed shapes and no host sync,
            # which a CUDA graph needs. The unselected rows compute values nobody reads; the
            # selected rows' values are those of the packed layout.
            self.dense, self.uniform, self.slots = True, False, self.length
            self.key = self.attn_mask = None
            if not all_selected:
                self.key = select
                self_key = torch.eye(self.length, dtype=torch.bool, device=select.device)
                self.attn_mask = (select[:, None, :] | self_key)[:, None]
            return
        counts = select.sum(1)
        sizes = torch.stack(torch.aminmax(counts)) if self.batch else counts.new_full((2,), self.length)
        if groups is not None:  # (N,) group of each token: its counts ride on the same host sync
            per_group = counts.new_zeros(num_groups).index_add_(0, groups, select.sum(0))
            sizes = torch.cat([sizes, per_group])
        sizes = sizes.tolist()  # the one host sync
        low, high = sizes[:2]
        if groups is not None:
            self.group_counts = sizes[2:]
        self.dense = low == self.length
        self.uniform = low == high > 0
        self.slots = self.length if self.dense else max(high, 1)  # M
        self.key = self.attn_mask = None  # (B, M) real slots; (B, 1, M, M) True = may attend
        if self.dense:
            return
        self.src = select.reshape(-1).nonzero().squeeze(1)  # rows of (B * N), sample by sample, in order
        if self.uniform:
            return
        slot = (select.cumsum(1) - 1).reshape(-1)[self.src]
        self.dst = self.src // self.length * self.slots + slot  # rows of (B * M)
        self.key = torch.arange(self.slots, device=select.device)[None, :] < counts[:, None]
        self_key = torch.eye(self.slots, dtype=torch.bool, device=select.device)
        self.attn_mask = (self.key[:, None, :] | self_key)[:, None]

    def rows_of(self, sub: Packing) -> torch.Tensor:
        """(T_sub,) the rows of this packing's (T, ...) that hold the tokens of `sub` (a packing of a
        subset of these tokens), in `sub`'s row order."""
        if self.dense:
            return sub.src
        rank = torch.full((self.batch * self.length,), -1, dtype=torch.long, device=self.src.device)
        rank[self.src] = torch.arange(self.src.numel(), device=self.src.device)
        return rank[sub.src]

    def pack(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (T, C)."""
        flat = grid.reshape(self.batch * self.length, -1)
        return flat if self.dense else flat.index_select(0, self.src)

    def unpack(self, rows: torch.Tensor) -> torch.Tensor:
        """(T, C) -> (B, N, C) with zeros at unselected tokens."""
        if not self.dense:
            rows = rows.new_zeros(self.batch * self.length, rows.shape[-1]).index_copy(0, self.src, rows)
        return rows.view(self.batch, self.length, -1)

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        """(T, C) -> (B, M, C) with zeros in the empty slots."""
        if not (self.dense or self.uniform):
            rows = rows.new_zeros(self.batch * self.slots, rows.shape[-1]).index_copy(0, self.dst, rows)
        return rows.view(self.batch, self.slots, -1)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, M, C) -> (T, C)."""
        flat = padded.reshape(self.batch * self.slots, -1)
        return flat if self.dense or self.uniform else flat.index_select(0, self.dst)


class Queries:
    """The tokens whose outputs are wanted, a subset of a packing's tokens (see MTM.forward)."""

    def __init__(self, select: torch.Tensor, within: Packing):
        self.packing = Packing(select)  # the query tokens, packed and padded on their own
        self.rows = within.rows_of(self.packing)  # (T_q,) their rows in `within`'s (T, ...)
        self.attn_mask = None  # (B, 1, 1, M): a query attends to the real keys of its sample
        if within.key is not None:
            # A sample with no real token at all (all padding) may attend to its empty slots, so
            # that its (discarded) padded query slots still get a finite softmax.
            self.attn_mask = (within.key | ~within.key.any(1, keepdim=True))[:, None, None, :]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads = cfg.heads
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor, packing: Packing, queries: Queries | None = None) -> torch.Tensor:
        """(T, width) -> (T, width); with `queries`, only the query rows: (T_q, width)."""
        if queries is None:
            qkv = packing.pad(self.qkv(x))  # (B, M, 3 * width): only attention needs the padded layout
            b, m, _ = qkv.shape
            q, k, v = qkv.view(b, m, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, M, d)
            out, attn_mask = packing, packing.attn_mask
        else:
            # Keys and values of every token, queries of the query rows only (the qkv weight's first
            # third is the query projection). Query slots attend to the real keys of their sample.
            w = x.shape[-1]
            kv = packing.pad(F.linear(x, self.qkv.weight[w:], self.qkv.bias[w:]))  # (B, M, 2 * width)
            b, m, _ = kv.shape
            k, v = kv.view(b, m, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
            q = F.linear(x.index_select(0, queries.rows), self.qkv.weight[:w], self.qkv.bias[:w])
            q = queries.packing.pad(q)  # (B, M_q, width)
            q = q.view(b, q.shape[1], self.heads, -1).transpose(1, 2)
            out, attn_mask = queries.packing, queries.attn_mask
        p = self.dropout if self.training else 0.0
        # Training on a CPU: the math kernel. The flash kernel's backward is slow on our short
        # sequences (6-12 tokens): `small` trains 1.11x faster in bf16 with math, level in fp32 and
        # at width 512; inference keeps the default, faster there (BENCHMARKS.md, "The training
        # step against the official code").
        math_kernel = self.training and q.device.type == "cpu"
        with sdpa_kernel(SDPBackend.MATH) if math_kernel else contextlib.nullcontext():
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        return self.proj(out.unpad(y.transpose(1, 2).flatten(2)))


class Block(nn.Module):
    """Pre-LayerNorm Transformer block on packed tokens (T, width)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.width)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.width)
        hidden = cfg.ffn_mult * cfg.width
        self.ffn = nn.Sequential(nn.Linear(cfg.width, hidden), nn.GELU(), nn.Linear(hidden, cfg.width))
        self.drop = Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, packing: Packing, queries: Queries | None = None) -> torch.Tensor:
        """(T, width) -> (T, width); with `queries`, only their rows (T_q, width): every token is
        still a key and value, everything else runs on the query rows."""
        a = self.attn(self.ln1(x), packing, queries)
        x = x if queries is None else x.index_select(0, queries.rows)
        if not self.training:  # Dropout is the identity: skip its calls (a policy's act is overhead-bound)
            x = x + a
            return x + self.ffn(self.ln2(x))
        x = x + self.drop(a)
        return x + self.drop(self.ffn(self.ln2(x)))


class TokenModel(nn.Module):
    """What the MTM and the MLP baselines (mtm.model.mlp) share: tokenizers ({modality: Tokenizer},
    ordered; the names are the batch keys, the order the token order), the token layout over a
    window of L timesteps, parameter groups and the spec that rebuilds the model."""

    # What each model kind can be asked for, a subset of the names in mtm.policy_config: the modes
    # mtm.policy may act in (of POLICY_MODES) and the tasks validation may score (of PREDICTION_TASK_NAMES).
    policy_modes: tuple[str, ...]
    prediction_tasks: tuple[str, ...]
    # Why this kind always computes in fp32 whatever the precision asked for (None: it runs at the
    # precision resolved for it). Training, the policy and the planner report fp32 for it, with this reason.
    fp32_only: str | None = None
    # Whether predict() takes static=True (fixed shapes, no host sync: MTM.forward). The baselines'
    # forward passes have neither packing nor host syncs: they are static as they are.
    static_forward: bool = False

    def inference_work(self, windows: int) -> int:
        """The work of one forward pass over `windows` windows in the units of
        mtm.hardware.CPU_BF16_MIN_WORK (token rows x width^2: about the multiply-adds of one
        Transformer layer's projections, divided by 12), which decides whether bf16 pays on a CPU."""
        return windows * self.layout.num_tokens * self.config.width ** 2

    def __init__(self, config: ModelConfig, tokenizers: Mapping[str, Tokenizer], window: int):
        super().__init__()
        self.config = config
        self.window = int(window)
        self.tokenizers = nn.ModuleDict(tokenizers)
        self.layout = TokenLayout.from_tokenizers(tokenizers, window)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay on Linear weights (attention included), none on biases,
        LayerNorms, embeddings and mask tokens."""
        decay = {id(m.weight) for m in self.modules() if isinstance(m, nn.Linear)}
        params = [p for p in self.parameters() if p.requires_grad]
        return [
            {"params": [p for p in params if id(p) in decay], "weight_decay": float(weight_decay)},
            {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0},
        ]

    def spec(self) -> dict:
        """JSON-able description that, with the state_dict, rebuilds this model (`from_spec`)."""
        return {"config": dataclasses.asdict(self.config), "window": self.window,
                "tokenizers": {name: tok.spec() for name, tok in self.tokenizers.items()}}

    @classmethod
    def from_spec(cls, spec: dict):
        tokenizers = {name: tokenizer_from_spec(s) for name, s in spec["tokenizers"].items()}
        return cls(ModelConfig(**spec["config"]), tokenizers, spec["window"])


class MTM(CriticValues, TokenModel):
    """The masked trajectory model over `tokenizers` and a window of L timesteps (see TokenModel)."""

    policy_modes = POLICY_MODES  # every one (an MLP baseline does one)
    prediction_tasks = PREDICTION_TASK_NAMES  # every one
    static_forward = True

    def __init__(self, config: ModelConfig, tokenizers: Mapping[str, Tokenizer], window: int):
        if not tokenizers:
            raise ConfigError("the model needs at least one modality")
        super().__init__(config, tokenizers, window)
        w = config.width

        def type_embeddings() -> nn.ParameterDict:
            # One learned vector per (modality, sub-token): a modality embedding and a per-sub-token
            # embedding would only ever appear summed, so one (k, width) table per modality is both.
            tables = {n: nn.Parameter(torch.empty(tok.tokens_per_step, w)) for n, tok in tokenizers.items()}
            return nn.ParameterDict(tables)

        def head(tok: Tokenizer) -> nn.Module:
            if config.mlp_heads:
                return nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, tok.output_dim))
            return nn.Linear(w, tok.output_dim)

        # Encoder side.
        self.embed = nn.ModuleDict({n: nn.Linear(tok.input_dim, w) for n, tok in tokenizers.items()})
        self.enc_type = type_embeddings()
        if config.use_timestep_embedding:
            self.timestep_embedding = nn.Embedding(config.max_timestep, w)
        self.encoder = nn.ModuleList(Block(config) for _ in range(config.encoder_layers))
        self.enc_norm = nn.LayerNorm(w)
        # The observation modalities: the state and every camera (an image's mask role is "states").
        self.observations = [n for n in tokenizers if self.layout.roles[n] == "states"]
        self.fuse = None
        if config.fuse_observations:
            if not self.observations:
                raise ConfigError("model.fuse_observations joins the observation modalities (states, frames), and "
                                  "this model has none; set it to 0")
            fused_in = sum(tokenizers[n].tokens_per_step * tokenizers[n].input_dim + 1 for n in self.observations)
            self.fuse = nn.Sequential(nn.Linear(fused_in, config.fuse_observations), nn.GELU(),
                                      nn.Linear(config.fuse_observations, w))
        self.fuse_query = None
        if config.fuse_query:
            if "actions" not in tokenizers or tokenizers["actions"].tokens_per_step != 1:
                raise ConfigError("model.fuse_query adds the fused observations to the action tokens: it needs "
                                  "actions of one token per step (tokens.actions: continuous)")
            self.fuse_query = nn.Linear(w, w)
        # Decoder side: encoder outputs re-embedded per modality, mask tokens at hidden places.
        self.dec_embed = nn.ModuleDict({n: nn.Linear(w, w) for n in tokenizers})
        self.mask_token = nn.ParameterDict({n: nn.Parameter(torch.empty(w)) for n in tokenizers})
        self.dec_type = type_embeddings()
        self.decoder = nn.ModuleList(Block(config) for _ in range(config.decoder_layers))
        self.dec_norm = nn.LayerNorm(w)
        # Input-only modalities (output_dim 0, e.g. images that are not reconstructed) get no head.
        self.heads = nn.ModuleDict({n: head(tok) for n, tok in tokenizers.items() if tok.output_dim > 0})
        if config.value_expectile > 0:
            if "returns" not in tokenizers:
                raise ConfigError("model.value_expectile needs return tokens (tokens.use_returns)")
            # A second head on the return tokens: the same decoder output, another estimate of the
            # return (an upper expectile, not the mean), so RCBC's return head is left as it was.
            self.heads[VALUE] = head(tokenizers["returns"])
        if config.reward_head:
            if "returns" not in tokenizers or getattr(tokenizers.get("actions"), "tokens_per_step", 0) != 1:
                raise ConfigError("model.reward_head needs return tokens (tokens.use_returns) and one token per action")
            # On the action token: the reward of (s_t, a_t), read where the action is shown. Its own
            # units (z-scored by the data's reward statistics, set by `set_reward_stats` and saved
            # with the weights): rewards in the return token's units can be far from its mean (on
            # hopper-medium-replay a loss of ~60 that swamped every other head's).
            self.heads[REWARD] = head(tokenizers["returns"])
            self.reward_units = ContinuousTokenizer(1, [0.0], [1.0], name="rewards")
        # Fixed, derived from the config: not saved in the state_dict.
        position = sincos_position_table(self.window, w) * config.position_scale
        self.register_buffer("token_position", position[self.layout.timestep], persistent=False)  # (N, w)
        self.register_buffer("token_timestep", self.layout.timestep.clone(), persistent=False)
        modality = torch.zeros(self.layout.num_tokens, dtype=torch.long)
        for i, name in enumerate(tokenizers):
            modality[self.layout.slice(name)] = i
        self.register_buffer("token_modality", modality, persistent=False)  # (N,) index into tokenizers
        self._init_weights()
        self.critic = None
        if config.critic:
            states, actions = tokenizers.get("states"), tokenizers.get("actions")
            if not (isinstance(states, ContinuousTokenizer) and isinstance(actions, ContinuousTokenizer)):
                raise ConfigError("model.critic needs continuous states and actions (tokens.states/actions: continuous)")
            # Its own networks on the raw (s, a), beside the Transformer: a TD target needs Q of the
            # data's action at every step, which no mask of the window gives (mtm.model.critic).
            # Built after _init_weights: it keeps PyTorch's default initialisation as IQL does (and
            # its target Qs stay copies of its Qs), and the Transformer's initial weights are the
            # same with or without a critic, so RCBC with and without one compare like for like.
            self.critic = TwinCritic(states.dim, actions.dim, config.critic_width, config.critic_layers,
                                     expectile=config.iql_expectile, discount=config.iql_discount,
                                     polyak=config.iql_polyak, qs=config.critic_qs)
            self.register_buffer("reward_scale", torch.ones(()))
            # IQL's input units (mtm.model.critic): states z-scored + 1e-3, actions to [-1, 1] over the bounds.
            self.register_buffer("action_low", -torch.ones(actions.dim))
            self.register_buffer("action_high", torch.ones(actions.dim))

    def _init_weights(self) -> None:
        # GPT-2 style: N(0, 0.02) everywhere, residual output projections scaled down by the depth
        # so the residual stream's variance does not grow with the number of blocks. Tokenizers
        # keep their own initialisation (a future image encoder may come pre-trained).
        own = {id(m) for m in self.tokenizers.modules()}
        for module in self.modules():
            if id(module) in own:
                continue
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        depth = self.config.encoder_layers + self.config.decoder_layers
        for block in [*self.encoder, *self.decoder]:
            for proj in (block.attn.proj, block.ffn[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * depth))
        for p in [*self.enc_type.values(), *self.dec_type.values(), *self.mask_token.values()]:
            nn.init.normal_(p, std=0.02)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The loss's parts: the heads (what forward() returns: the modalities, VALUE, REWARD), then
        the critic's q and v losses."""
        return tuple(self.heads) + (CRITIC_PARTS if self.critic is not None else ())

    @property
    def has_critic(self) -> bool:
        return self.critic is not None

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """TokenModel's groups for the Transformer; the critic's networks keep train.lr throughout
        and no weight decay (CORL's IQL schedules and decays neither)."""
        if self.critic is None:
            return super().optim_groups(weight_decay)
        critic = {id(p) for p in self.critic.parameters()}
        groups = [{**g, "params": [p for p in g["params"] if id(p) not in critic]} for g in super().optim_groups(weight_decay)]
        own = [p for p in self.critic.parameters() if p.requires_grad]
        return groups + [{"params": own, "weight_decay": 0.0, "constant_lr": True}]

    def fit_to_data(self, data) -> None:
        """The critic's reward scale and action bounds from the training split (a new model only;
        saved as buffers)."""
        if self.critic is not None:
            self.reward_scale.fill_(reward_scale(data.episode_returns(), self.config.iql_normalize_reward))
            low, high = action_bounds(data, self.action_low.shape[0])
            self.action_low.copy_(low)
            self.action_high.copy_(high)

    def critic_loss(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(q + v, {"q", "v"}): the critic's TD losses on the window's transitions (`window_transitions`),
        in fp32 whatever autocast is on (Q ~ 100 in IQL's reward units: bf16 keeps ~0.4)."""
        with torch.autocast(batch["states"].device.type, enabled=False):
            t = window_transitions(batch, self.critic_states, self.critic_actions, self.reward_scale)
            q, v, _ = self.critic.losses(kept_only(t))
        return q + v, {"q": q, "v": v}

    @torch.no_grad()
    def action_weights(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, L) weights of the window's action tokens in the loss with model.awr_beta > 0:
        exp(beta * (Q'(s, a) - V(s))) of each step's data (s, a), clipped as IQL's actor's
        (advantage_weights), then divided by their mean over the batch's real steps, so the action
        loss keeps its scale beside the other modalities'. In fp32 (mtm.model.critic: bf16 would
        round A); no host sync (it runs in every training step)."""
        with torch.autocast(batch["states"].device.type, enabled=False):
            s, a = self.critic_states(batch["states"]), self.critic_actions(batch["actions"])
            advantage = self.critic.target_q(s, a) - self.critic.v(s)[..., 0]
            weights = advantage_weights(advantage, self.config.awr_beta)
            real = batch["valid"].bool()
            if "present_actions" in batch:  # an episode without actions has no action loss to weigh
                real = real & batch["present_actions"].bool()[:, None]
            weights = torch.where(real, weights, torch.zeros_like(weights))
            mean = weights.sum() / real.sum().clamp_min(1)
            return weights / mean.clamp_min(1e-12)

    def after_optimizer_step(self) -> None:
        """The critic's target Qs follow the weights just updated."""
        if self.critic is not None:
            self.critic.update_targets()

    @property
    def has_value(self) -> bool:
        return VALUE in self.heads

    @property
    def has_reward(self) -> bool:
        return REWARD in self.heads

    def set_reward_stats(self, mean, std) -> None:
        """The reward head's units: the training data's reward mean and std (a new model only)."""
        self.reward_units.mean.copy_(torch.as_tensor(mean, dtype=torch.float32).reshape(1))
        self.reward_units.std.copy_(torch.as_tensor(std, dtype=torch.float32).reshape(1))

    def units(self, name: str) -> Tokenizer:
        """The tokenizer that decodes head `name`'s outputs (and makes its targets)."""
        return self.reward_units if name == REWARD else self.tokenizers[head_units(name)]

    def _masks(self, batch: Mapping[str, torch.Tensor], visible: torch.Tensor, valid):
        """-> (B, N) visible & real, (B, N) real. valid defaults to batch['valid'] when present."""
        first = batch[next(iter(self.tokenizers))]
        b, length = first.shape[:2]
        if length != self.window:
            raise ValueError(f"batch has {length} timesteps, the model's window is {self.window}")
        n = self.layout.num_tokens
        if visible.shape[-1] != n or visible.dim() not in (1, 2):
            raise ValueError(f"visible must be (N,) or (B, N) with N = {n}, got {tuple(visible.shape)}")
        visible = visible.to(first.device).bool().expand(b, n)
        present = present_tokens(self.layout, batch)
        if present is not None:  # what a sample's episode lacks is never shown: its values are placeholders
            visible = visible & present.to(visible.device)
        valid = batch.get("valid") if valid is None else valid
        if valid is None:
            return visible, torch.ones(b, n, dtype=torch.bool, device=first.device)
        valid = valid.to(first.device)
        return apply_valid(visible, valid, self.layout), self.layout.token_valid(valid)

    def _encoder_inputs(self, batch, visible: torch.Tensor,
                        static: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, width) embeddings of every token, and (B, L, width) the fused observations of each
        step (model.fuse_observations; None without); the values of hidden tokens are zeroed first,
        so they cannot reach the network (not even a NaN through the backward pass). Not `static`:
        each tokenizer may skip encoding the steps it does not show (Tokenizer.encode_shown: an
        image encoder's convolutions); the selection counts rows on the host, which a CUDA graph
        capture (static) cannot do."""
        parts, fuse_in = [], []
        for name, tok in self.tokenizers.items():
            k = self.layout.tokens_per_step[name]
            shown = visible[:, self.layout.slice(name)].unflatten(1, (self.window, k))  # (B, L, k)
            raw = batch[name]
            x = tok.encode(raw) if static else tok.encode_shown(raw, shown)  # (B, L, k, input_dim)
            x = x.masked_fill(~shown[..., None], 0.0)
            if self.fuse is not None and name in self.observations:
                fuse_in.append(torch.cat([x.flatten(2), shown.any(-1, keepdim=True).to(x.dtype)], -1))
            parts.append(self.embed[name](x) + self.enc_type[name])
        fused = None
        if fuse_in:
            fused = self.fuse(torch.cat([f.to(fuse_in[0].dtype) for f in fuse_in], -1))  # (B, L, width)
            parts = [p + fused[:, :, None] if name in self.observations else p
                     for name, p in zip(self.tokenizers, parts)]
        x = torch.cat([p.flatten(1, 2) for p in parts], 1) + self.token_position
        if self.config.use_timestep_embedding:
            steps = batch["timesteps"].long().clamp(0, self.config.max_timestep - 1)
            x = x + self.timestep_embedding(steps[:, self.token_timestep])
        return x, fused

    def _reembed(self, rows: torch.Tensor, enc: Packing) -> torch.Tensor:
        """(T, width) encoder outputs of the visible tokens -> (B, N, width): each re-embedded by its
        modality's dec_embed, zeros at the hidden tokens. Only the visible rows are multiplied: in
        training about 4.6 of a window's 12 tokens are visible, and dec_embed at every token cost
        another twelfth of a decoder layer per token (BENCHMARKS.md, "The training step against the
        official code")."""
        names = list(self.tokenizers)
        if len(names) == 1:
            return enc.unpack(self.dec_embed[names[0]](rows))
        if enc.dense:  # every token is a row: each modality's slice of the grid (a static packing's
            grid = enc.unpack(rows)  # hidden rows too: _decoder_inputs puts mask tokens there)
            return torch.cat([self.dec_embed[name](grid[:, self.layout.slice(name)]) for name in names], 1)
        modality = self.token_modality[enc.src % self.layout.num_tokens]  # (T,)
        order = torch.argsort(modality, stable=True)
        # Counted in the packing's own host sync: forward builds it with the tokens' modalities as groups.
        grouped = rows.index_select(0, order).split(enc.group_counts)
        out = torch.cat([self.dec_embed[name](x) for name, x in zip(names, grouped)])
        return enc.unpack(out.new_empty(out.shape).index_copy(0, order, out))

    def _decoder_inputs(self, encoded: torch.Tensor, visible: torch.Tensor,
                        fused: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, width): the re-embedded encoder outputs (`_reembed`) at visible tokens, mask tokens
        at hidden ones; with model.fuse_query, plus each step's fused observations on its action token."""
        parts = []
        for name in self.tokenizers:
            sl = self.layout.slice(name)
            x = torch.where(visible[:, sl, None], encoded[:, sl], self.mask_token[name])
            if self.fuse_query is not None and name == "actions":
                x = x + self.fuse_query(fused)  # (B, L, width): one action token per step
            k = self.layout.tokens_per_step[name]
            parts.append((x.unflatten(1, (self.window, k)) + self.dec_type[name]).flatten(1, 2))
        return torch.cat(parts, 1) + self.token_position

    def forward(self, batch: Mapping[str, torch.Tensor], visible: torch.Tensor,
                valid: torch.Tensor | None = None, *, heads: Collection[str] | None = None,
                queries: torch.Tensor | None = None, static: bool = False) -> dict[str, torch.Tensor]:
        """Head outputs {modality: (B, L, k, output_dim)} for every token (input-only modalities: none).

        batch: raw tensors keyed by modality (+ "timesteps" (B, L) when use_timestep_embedding).
        visible: (N,) or (B, N) bool, True = VISIBLE. valid: (B, L) bool, False on padded steps
        (default: batch["valid"] if present, else all real); padded steps are never visible nor
        attended to, and their outputs are meaningless. heads: only these modalities' outputs.
        queries: (N,) or (B, N) bool, True = this token's output is wanted (a policy: the action at
        the current step); the other outputs are 0. Every real token is still a key and value, so
        the query outputs are the full forward's (to float rounding); only the last decoder block
        (but its keys and values), the final norm and the heads run at the query tokens alone.
        static: every token runs through every layer, the hidden ones kept out of attention by key
        masks (Packing(static=True)): the same outputs (to float rounding) from fixed shapes and no
        host synchronisation, so that a CUDA graph can capture the call (mtm.policy); `queries` then
        only zeroes the other outputs.
        """
        visible, real = self._masks(batch, visible, valid)
        if static:  # fixed shapes, no host sync; the decoder needs no key mask where no step is padded
            enc = Packing(visible, static=True)
            dec = Packing(real, static=True, all_selected=valid is None and "valid" not in batch)
        else:
            enc = Packing(visible, groups=self.token_modality, num_groups=len(self.tokenizers))
            dec = Packing(real)
        embedded, fused = self._encoder_inputs(batch, visible, static)
        x = enc.pack(embedded)
        for block in self.encoder:
            x = block(x, enc)
        encoded = self._reembed(self.enc_norm(x), enc)

        x = dec.pack(self._decoder_inputs(encoded, visible, fused))
        asked = zeroed = None  # the query rows alone (packed), or every row with the others zeroed (static)
        if queries is not None:
            wanted = queries.to(real.device).bool().expand_as(real) & real
            if static:
                zeroed = wanted
            elif not (dec.dense and bool(wanted.all())):
                asked = Queries(wanted, dec)
        for i, block in enumerate(self.decoder):
            x = block(x, dec, asked if i == len(self.decoder) - 1 else None)
        x = self.dec_norm(x)
        decoded = dec.unpack(x) if asked is None else None

        out = {}
        for name in self.heads:
            if heads is not None and name not in heads:
                continue
            modality = head_modality(name)
            sl = self.layout.slice(modality)
            if asked is None:
                h = self.heads[name](decoded[:, sl])
                if zeroed is not None:
                    h = h * zeroed[:, sl, None]
            else:
                h = self._query_head(name, x, asked)
            out[name] = h.unflatten(1, (self.window, self.layout.tokens_per_step[modality]))
        return out

    def _query_head(self, name: str, rows: torch.Tensor, asked: Queries) -> torch.Tensor:
        """(B, L * k, output_dim): the head `name` at the query tokens (decoder outputs `rows`,
        (T_q, width)), 0 elsewhere. It runs on every query row, even other modalities' (sliced away):
        cheaper than selecting rows when, as for a policy, all queries are of one modality."""
        sl, b, n = self.layout.slice(head_modality(name)), asked.packing.batch, self.layout.num_tokens
        h = self.heads[name](rows)
        grid = h.new_zeros(b * n, h.shape[-1]).index_copy(0, asked.packing.src, h)
        return grid.view(b, n, -1)[:, sl]

    def predict(self, batch: Mapping[str, torch.Tensor], visible: torch.Tensor,
                valid: torch.Tensor | None = None, *, heads: Collection[str] | None = None,
                queries: torch.Tensor | None = None, static: bool = False) -> dict[str, torch.Tensor]:
        """Raw-unit predictions {modality: (B, L, ...)} of every token (decoded head outputs); with
        `queries` (see forward) only those at the query tokens mean anything. Runs under
        torch.inference_mode (cheaper per op than no_grad); the outputs are cloned outside it, so
        callers get ordinary tensors that in-place ops accept. `static`: see forward."""
        with torch.inference_mode():
            out = self.forward(batch, visible, valid, heads=heads, queries=queries, static=static)
            out = {name: self.units(name).decode(h) for name, h in out.items()}
        return {name: v.clone() for name, v in out.items()}

    @classmethod
    def from_spec(cls, spec: dict) -> MTM:
        unknown = set(spec["config"]) - {f.name for f in dataclasses.fields(ModelConfig)}
        if unknown:
            raise ConfigError(f"unknown model config fields {sorted(unknown)}")
        return super().from_spec(spec)
