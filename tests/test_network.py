import json

import numpy as np
import pytest
import torch

from mtm.errors import ConfigError
from mtm.model.loss import mtm_loss
from mtm.model.masks import bc_mask, random_autoregressive_mask, rcbc_mask
from mtm.model.network import MTM, ModelConfig, Packing
from mtm.model.tokenizers import BinnedTokenizer, ContinuousTokenizer

torch.set_num_threads(1)

S, A, L = 5, 2, 4
TINY = dict(width=32, encoder_layers=2, decoder_layers=1, heads=4, dropout=0.0)


def make_tokenizers(binned_actions=False):
    g = np.random.default_rng(0)
    toks = {
        "states": ContinuousTokenizer(S, g.normal(size=S), g.uniform(0.5, 2, size=S), name="states"),
        "returns": ContinuousTokenizer(1, [1.0], [3.0], name="returns"),
    }
    if binned_actions:
        toks["actions"] = BinnedTokenizer(A, [-1.0] * A, [1.0] * A, num_bins=8, name="actions")
    else:
        toks["actions"] = ContinuousTokenizer(A, np.zeros(A), np.ones(A), name="actions")
    return toks


def make_model(binned_actions=False, **overrides):
    torch.manual_seed(0)
    return MTM(ModelConfig(**{**TINY, **overrides}), make_tokenizers(binned_actions), L).eval()


def make_batch(B, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "states": torch.randn(B, L, S, generator=g),
        "returns": torch.randn(B, L, 1, generator=g),
        "actions": torch.rand(B, L, A, generator=g) * 2 - 1,
        "timesteps": torch.randint(0, 50, (B, 1), generator=g) + torch.arange(L),
    }


def sample(batch, b):
    return {k: v[b : b + 1] for k, v in batch.items()}


def test_output_shapes_continuous_and_binned():
    for binned in (False, True):
        model = make_model(binned)
        batch = make_batch(3)
        out = model(batch, bc_mask(model.layout, 2))
        assert out["states"].shape == (3, L, 1, S)
        assert out["returns"].shape == (3, L, 1, 1)
        assert out["actions"].shape == ((3, L, A, 8) if binned else (3, L, 1, A))
        raw = model.predict(batch, bc_mask(model.layout, 2))
        shapes = {k: tuple(v.shape) for k, v in raw.items()}
        assert shapes == {"states": (3, L, S), "returns": (3, L, 1), "actions": (3, L, A)}


@pytest.mark.parametrize("binned", [False, True])
def test_per_sample_masks_match_samples_run_one_by_one(binned):
    model = make_model(binned, use_timestep_embedding=True)
    B = 6
    batch = make_batch(B)
    visible = random_autoregressive_mask(model.layout, B, torch.Generator().manual_seed(0))
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[1, 3:] = False
    valid[4, 1:] = False
    together = model(batch, visible, valid)
    for b in range(B):
        alone = model(sample(batch, b), visible[b], valid[b : b + 1])
        real = valid[b]
        for name in together:
            torch.testing.assert_close(together[name][b, real], alone[name][0, real], atol=1e-5, rtol=1e-5)


def test_hidden_token_values_do_not_matter():
    model = make_model()
    batch = make_batch(4)
    visible = random_autoregressive_mask(model.layout, 4, torch.Generator().manual_seed(1))
    before = model(batch, visible)
    changed = {k: v.clone() for k, v in batch.items()}
    for name in ("states", "returns", "actions"):
        hidden = ~visible[:, model.layout.slice(name)].view(4, L)
        changed[name][hidden] = float("nan")  # not even NaN gets through
    after = model(changed, visible)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    assert any(not torch.equal(model(make_batch(4, seed=9), visible)[n], before[n]) for n in before)


def test_padded_steps_do_not_affect_real_tokens():
    model = make_model()
    batch = make_batch(3)
    visible = torch.ones(model.layout.num_tokens, dtype=torch.bool)  # even marked visible
    valid = torch.tensor([[True, True, False, False], [True] * 4, [True, False, False, False]])
    before = model(batch, visible, valid)
    changed = {k: v.clone() for k, v in batch.items()}
    for name in ("states", "returns", "actions"):
        changed[name][~valid] = 1e6
    after = model(changed, visible, valid)
    for name in before:
        torch.testing.assert_close(after[name][valid], before[name][valid], rtol=0, atol=1e-6)
    # valid defaults to batch["valid"]
    with_key = model({**changed, "valid": valid}, visible)
    torch.testing.assert_close(with_key["states"][valid], before["states"][valid], rtol=0, atol=1e-6)


def test_a_visible_token_changes_the_prediction_of_a_hidden_one():
    model = make_model()
    batch = make_batch(1)
    visible = bc_mask(model.layout, 3)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["states"][0, 0] += 1.0
    a = model(batch, visible)["actions"][0, 3]
    b = model(changed, visible)["actions"][0, 3]
    assert not torch.allclose(a, b)


def test_no_nan_with_nothing_visible_and_gradients_are_finite():
    model = make_model()
    model.train()
    batch = make_batch(3)
    visible = torch.zeros(3, model.layout.num_tokens, dtype=torch.bool)
    visible[0, 5] = True  # other rows show nothing at all
    valid = torch.tensor([[True, False, False, False], [True] * 4, [True] * 4])
    batch["actions"][0, 1:] = float("nan")  # padded and hidden
    out = model(batch, visible, valid)
    loss = sum(o[valid].square().mean() for o in out.values())
    loss.backward()
    assert all(torch.isfinite(o[valid]).all() for o in out.values())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    nothing = model(batch, torch.zeros(model.layout.num_tokens, dtype=torch.bool), valid)
    assert all(torch.isfinite(o[valid]).all() for o in nothing.values())


def test_mask_broadcast_and_timestep_embedding():
    model = make_model(use_timestep_embedding=True, max_timestep=60)
    batch = make_batch(2)
    mask = bc_mask(model.layout, 1)
    torch.testing.assert_close(model(batch, mask)["actions"], model(batch, mask.expand(2, -1))["actions"])
    later = {**batch, "timesteps": batch["timesteps"] + 7}
    assert not torch.allclose(model(batch, mask)["actions"], model(later, mask)["actions"])
    # steps beyond max_timestep share the last embedding
    far = model({**batch, "timesteps": batch["timesteps"] + 1000}, mask)["actions"]
    farther = model({**batch, "timesteps": batch["timesteps"] + 5000}, mask)["actions"]
    torch.testing.assert_close(far, farther)


def test_bad_shapes_and_configs():
    model = make_model()
    with pytest.raises(ValueError, match="window"):
        model({k: v[:, :3] for k, v in make_batch(2).items()}, torch.ones(9, dtype=torch.bool))
    with pytest.raises(ValueError, match="visible"):
        model(make_batch(2), torch.ones(7, dtype=torch.bool))
    with pytest.raises(ValueError, match="width must be even and divisible by heads"):
        ModelConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dropout=1.0)
    with pytest.raises(ConfigError, match="at least one modality"):
        MTM(ModelConfig(**TINY), {}, L)


def test_packing_round_trips():
    select = torch.tensor([[True, False, True, True], [False, False, True, False], [False] * 4])
    p = Packing(select)
    grid = torch.arange(3 * 4, dtype=torch.float32).view(3, 4, 1)
    rows = p.pack(grid)
    assert rows[:, 0].tolist() == [0, 2, 3, 6]
    assert p.slots == 3 and p.pad(rows)[:, :, 0].tolist() == [[0, 2, 3], [6, 0, 0], [0, 0, 0]]
    torch.testing.assert_close(p.unpad(p.pad(rows)), rows)
    torch.testing.assert_close(p.unpack(rows), grid * select[..., None])
    key = p.attn_mask[:, 0]
    assert key[0].all() and key[1, :, 0].all() and key[1].diagonal().all() and not key[1, 0, 1]
    assert Packing(torch.ones(2, 3, dtype=torch.bool)).attn_mask is None


@pytest.mark.parametrize("kind", ["per-sample", "uniform", "dense", "none visible"])
def test_reembedding_only_the_visible_rows_matches_reembedding_every_token(kind):
    """dec_embed runs on the visible rows only, each by its own modality's layer: the same grid as
    every token re-embedded and the hidden ones zeroed, for every kind of packing."""
    model = make_model()
    n, b = model.layout.num_tokens, 6
    g = torch.Generator().manual_seed(1)
    visible = {"per-sample": torch.rand(b, n, generator=g) < 0.4,
               "uniform": torch.stack([torch.randperm(n, generator=g) < 5 for _ in range(b)]),
               "dense": torch.ones(b, n, dtype=torch.bool),
               "none visible": torch.zeros(b, n, dtype=torch.bool)}[kind]
    enc = Packing(visible, groups=model.token_modality, num_groups=len(model.tokenizers))
    grid = torch.randn(b, n, model.config.width, generator=g)
    expected = torch.cat([model.dec_embed[name](grid[:, model.layout.slice(name)]) for name in model.tokenizers], 1)
    got = model._reembed(enc.pack(grid), enc)
    torch.testing.assert_close(got, expected * visible[..., None])


def test_reference_size_for_hopper():
    toks = {
        "states": ContinuousTokenizer(11, np.zeros(11), np.ones(11), name="states"),
        "returns": ContinuousTokenizer(1, [0.0], [1.0], name="returns"),
        "actions": ContinuousTokenizer(3, np.zeros(3), np.ones(3), name="actions"),
    }
    n = MTM(ModelConfig(), toks, 4).num_parameters()
    assert n == 11_056_655  # the official code: about 11 M


def test_optim_groups_decay_linear_weights_only():
    model = make_model(use_timestep_embedding=True)
    decay, no_decay = model.optim_groups(0.005)
    assert decay["weight_decay"] == 0.005 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert not decayed & kept and decayed | kept == set(names.values())
    assert all(n.endswith(".weight") for n in decayed)
    assert {"encoder.0.attn.qkv.weight", "decoder.0.attn.proj.weight", "heads.actions.2.weight"} <= decayed
    assert "embed.states.weight" in decayed and "dec_embed.returns.weight" in decayed
    assert {"mask_token.states", "enc_type.actions", "dec_type.states", "timestep_embedding.weight"} <= kept
    assert {"enc_norm.weight", "encoder.0.ln1.bias", "encoder.0.ffn.0.bias", "heads.states.0.bias"} <= kept


def test_spec_and_state_dict_rebuild_the_model():
    model = make_model(binned_actions=True)
    spec = json.loads(json.dumps(model.spec()))
    rebuilt = MTM.from_spec(spec).eval()
    state = model.state_dict()
    assert "tokenizers.states.mean" in state and "token_position" not in state
    rebuilt.load_state_dict(state)
    batch = make_batch(2)
    mask = bc_mask(model.layout, 3)
    for name, out in model(batch, mask).items():
        torch.testing.assert_close(rebuilt(batch, mask)[name], out)


def test_bf16_autocast_runs():
    model = make_model()
    batch = make_batch(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch, random_autoregressive_mask(model.layout, 2, torch.Generator().manual_seed(0)))
    assert all(torch.isfinite(o).all() for o in out.values())


def test_learns_actions_from_states_through_the_mask():
    # actions are a fixed function of the same step's state: BC must recover them from the states,
    # which works only if information flows from visible tokens to the hidden action tokens.
    torch.manual_seed(0)
    toks = {
        "states": ContinuousTokenizer(S, np.zeros(S), np.ones(S), name="states"),
        "actions": ContinuousTokenizer(A, np.zeros(A), np.ones(A), name="actions"),
    }
    model = MTM(ModelConfig(width=32, heads=2, encoder_layers=1, decoder_layers=1, dropout=0.0), toks, L)
    opt = torch.optim.AdamW(model.optim_groups(0.0), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    w = torch.randn(S, A, generator=g) / S**0.5

    def data(n):
        states = torch.randn(n, L, S, generator=g)
        return {"states": states, "actions": states @ w}

    for _ in range(250):
        batch = data(64)
        visible = random_autoregressive_mask(model.layout, 64, g)
        loss, _ = mtm_loss(model(batch, visible), batch, toks, visible, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = data(256)
    pred = model.predict(test, bc_mask(model.layout, L - 1))["actions"][:, L - 1]
    mse = (pred - test["actions"][:, L - 1]).square().mean()
    assert mse < 0.15 * test["actions"].var()  # ~1 before training


# --- query-restricted decoding (MTM.forward(..., queries=...)) -----------------------------------


def assert_queried_outputs_match(model, batch, visible, valid, queries, heads=None):
    full = model(batch, visible, valid, heads=heads)
    part = model(batch, visible, valid, heads=heads, queries=queries)
    assert set(part) == set(full)
    B = batch["states"].shape[0]
    asked = queries.expand(B, -1).clone()
    if valid is not None:
        asked &= model.layout.token_valid(valid)
    for name, out in part.items():
        k = model.layout.tokens_per_step[name]
        mine = asked[:, model.layout.slice(name)].view(B, L, k)
        assert out.shape == full[name].shape
        torch.testing.assert_close(out[mine], full[name][mine], atol=1e-5, rtol=1e-5)
        assert not out[~mine].any()  # not computed: zero


@pytest.mark.parametrize("binned", [False, True])
@pytest.mark.parametrize("decoder_layers", [1, 3])
def test_queries_match_the_full_forward(binned, decoder_layers):
    model = make_model(binned, decoder_layers=decoder_layers, use_timestep_embedding=True)
    B, N = 8, model.layout.num_tokens
    batch = make_batch(B)
    g = torch.Generator().manual_seed(3)
    visible = random_autoregressive_mask(model.layout, B, g)
    valid = torch.ones(B, L, dtype=torch.bool)
    valid[1, 2:] = False
    valid[4, 1:] = False
    queries = torch.rand(B, N, generator=g) < 0.3  # several per sample, visible or hidden tokens
    queries[0] = False  # a sample with no query
    queries[1, model.layout.timestep >= 2] = True  # queries at padded steps are dropped
    queries[2] = True  # every token of one sample
    queries[3, model.layout.index("actions", 1)] = True
    assert_queried_outputs_match(model, batch, visible, valid, queries)
    assert_queried_outputs_match(model, batch, visible, valid, queries, heads=("actions",))
    assert_queried_outputs_match(model, batch, visible, None, queries)  # nothing padded


@pytest.mark.parametrize("rcbc,binned", [(False, False), (True, False), (True, True)])
def test_policy_query_matches_the_full_forward(rcbc, binned):
    # What MTMPolicy.act asks: the action token(s) at the current step c of every sample, with the
    # same c everywhere (uniform packings, no attention masks) or a different c per sample.
    model = make_model(binned, decoder_layers=2)
    B = 5
    batch = make_batch(B)
    mask_fn = rcbc_mask if rcbc else bc_mask
    action_at = torch.stack([model.layout.role("actions") & (model.layout.timestep == t) for t in range(L)])
    for c in (torch.full((B,), L - 1), torch.tensor([0, 3, 1, 3, 2])):
        visible = mask_fn(model.layout, c)
        assert_queried_outputs_match(model, batch, visible, None, action_at[c], heads=("actions",))
        a = model.predict(batch, visible, heads=("actions",))["actions"][torch.arange(B), c]
        b = model.predict(batch, visible, heads=("actions",), queries=action_at[c])["actions"][torch.arange(B), c]
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    # one sample (batch-1 act) and a (N,) query broadcast over the batch
    assert_queried_outputs_match(model, sample(batch, 0), mask_fn(model.layout, 2), None, action_at[2])
    assert_queried_outputs_match(model, batch, mask_fn(model.layout, 2), None, action_at[2])


def test_queries_edge_cases():
    model = make_model()
    B, N = 3, model.layout.num_tokens
    batch = make_batch(B)
    visible = random_autoregressive_mask(model.layout, B, torch.Generator().manual_seed(5))
    # every token asked: the plain forward, exactly
    for name, out in model(batch, visible, queries=torch.ones(N, dtype=torch.bool)).items():
        torch.testing.assert_close(out, model(batch, visible)[name], rtol=0, atol=0)
    # nothing asked: all zeros, no error
    assert all(not o.any() for o in model(batch, visible, queries=torch.zeros(N, dtype=torch.bool)).values())
    # a sample that is all padding still gives finite outputs elsewhere
    valid = torch.tensor([[False] * L, [True] * L, [True, True, False, False]])
    out = model(batch, visible, valid, queries=torch.ones(B, N, dtype=torch.bool) & ~torch.eye(B, N, dtype=torch.bool))
    assert all(torch.isfinite(o).all() for o in out.values())
    some = torch.rand(B, N, generator=torch.Generator().manual_seed(1)) < 0.5
    assert_queried_outputs_match(model, batch, visible, valid, some)


def test_queries_in_train_mode_give_finite_gradients():
    model = make_model(dropout=0.1)
    model.train()
    batch = make_batch(4)
    visible = random_autoregressive_mask(model.layout, 4, torch.Generator().manual_seed(2))
    queries = bc_mask(model.layout, 3) == 0
    out = model(batch, visible, queries=queries)
    sum(o.square().sum() for o in out.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.decoder[0].ffn[0].weight.grad.abs().sum() > 0


def test_uniform_packing_is_a_reshape():
    select = torch.tensor([[True, False, True, False], [False, True, True, False]])  # 2 tokens each
    p = Packing(select)
    assert p.uniform and not p.dense and p.slots == 2 and p.attn_mask is None and p.key is None
    grid = torch.arange(2 * 4, dtype=torch.float32).view(2, 4, 1)
    rows = p.pack(grid)
    assert rows[:, 0].tolist() == [0, 2, 5, 6]
    assert p.pad(rows).data_ptr() == rows.data_ptr() and p.pad(rows)[:, :, 0].tolist() == [[0, 2], [5, 6]]
    torch.testing.assert_close(p.unpad(p.pad(rows)), rows)
    torch.testing.assert_close(p.unpack(rows), grid * select[..., None])
    # rows_of: where a subset's tokens sit in a packing's rows
    sub = Packing(torch.tensor([[False, False, True, False], [False, True, False, False]]))
    assert p.rows_of(sub).tolist() == [1, 2]
    assert Packing(torch.ones(2, 4, dtype=torch.bool)).rows_of(sub).tolist() == [2, 5]
    uneven = Packing(torch.tensor([[True, True, True, False], [False, True, True, False]]))
    assert not uneven.uniform and uneven.rows_of(sub).tolist() == [2, 3]
    # nothing selected anywhere is not "uniform" (attention needs at least one slot)
    nothing = Packing(torch.zeros(2, 4, dtype=torch.bool))
    assert not nothing.uniform and nothing.slots == 1 and nothing.pack(grid).shape == (0, 1)


# --- the static forward (fixed shapes, no host sync: what a CUDA graph captures) ------------------


@pytest.mark.parametrize("binned", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_the_static_forward_gives_the_packed_forwards_outputs(binned, padded):
    """Every token through every layer, hidden ones kept out of attention by key masks: the visible
    and queried outputs are the packed forward's, for per-sample masks and padded steps."""
    model = make_model(binned, decoder_layers=2, use_timestep_embedding=True)
    B = 8
    batch = make_batch(B, seed=3)
    g = torch.Generator().manual_seed(4)
    visible = random_autoregressive_mask(model.layout, B, g)
    valid = torch.ones(B, L, dtype=torch.bool)
    if padded:
        valid[2, 3:] = False
        valid[5, 1:] = False
    real = model.layout.token_valid(valid)
    packed = model(batch, visible, valid if padded else None)
    static = model(batch, visible, valid if padded else None, static=True)
    assert set(static) == set(packed)
    for name, out in static.items():
        k = model.layout.tokens_per_step[name]
        keep = real[:, model.layout.slice(name)].view(B, L, k)  # padded steps' outputs mean nothing
        torch.testing.assert_close(out[keep], packed[name][keep], atol=1e-5, rtol=1e-5)
    queries = rcbc_mask(model.layout, L - 1) & False
    queries[model.layout.index("actions", L - 1)] = True
    part = model(batch, visible, None, queries=queries, static=True)
    full = model(batch, visible, None, queries=queries)
    torch.testing.assert_close(part["actions"], full["actions"], atol=1e-5, rtol=1e-5)
    assert not part["states"].any()  # not asked: zero, as in the packed forward


def test_the_static_forward_never_synchronises_with_the_host(monkeypatch):
    """What makes it capturable: no .tolist() / .item() / nonzero() on a tensor inside the call."""
    model = make_model()
    batch = make_batch(4)
    visible = random_autoregressive_mask(model.layout, 4, torch.Generator().manual_seed(0))
    calls = []
    for name in ("tolist", "item", "nonzero"):
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _original=original, _name=name, **k):
            calls.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    model.predict(batch, visible, heads=("actions",), static=True)
    assert calls == []
    model.predict(batch, visible, heads=("actions",))
    assert calls  # the packed forward does synchronise (its packing sizes come from the masks)


def test_a_static_packing_marks_its_keys_and_needs_no_mask_when_every_token_is_selected():
    select = torch.tensor([[True, False, True], [False, False, True]])
    static = Packing(select, static=True)
    assert static.dense and static.key is select and static.attn_mask.shape == (2, 1, 3, 3)
    assert static.attn_mask[0, 0, 0].tolist() == [True, False, True] and static.attn_mask[1, 0, 1, 1]
    full = Packing(torch.ones(2, 3, dtype=torch.bool), static=True, all_selected=True)
    assert full.attn_mask is None and full.key is None


def test_the_packing_counts_each_groups_tokens_in_its_one_sync():
    select = torch.tensor([[True, False, True, True], [False, True, False, True]])
    groups = torch.tensor([0, 0, 1, 2])
    p = Packing(select, groups=groups, num_groups=3)
    assert p.group_counts == [2, 1, 2] and p.slots == 3
    assert Packing(select).group_counts is None
