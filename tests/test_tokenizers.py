import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtm.errors import ConfigError
from mtm.model.tokenizers import BinnedTokenizer, ContinuousTokenizer, tokenizer_from_spec

torch.set_num_threads(1)


def test_continuous_encode_is_z_score_with_floored_std():
    tok = ContinuousTokenizer(3, mean=[1.0, -2.0, 0.5], std=[2.0, 0.01, 0.0], min_std=0.1, name="states")
    assert (tok.tokens_per_step, tok.input_dim, tok.output_dim) == (1, 3, 3)
    x = torch.tensor([[[3.0, -1.9, 0.5], [1.0, -2.2, 0.7]]])  # (B=1, L=2, 3)
    z = tok.encode(x)
    assert z.shape == (1, 2, 1, 3) and z.dtype == torch.float32
    # std 2 used as is; std 0.01 and 0 floored to 0.1
    expected = torch.tensor([[[[1.0, 1.0, 0.0]], [[0.0, -2.0, 2.0]]]])
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(tok.targets(x), expected)


def test_continuous_round_trip_is_exact():
    g = torch.Generator().manual_seed(0)
    mean, std = np.array([3.0, -1.0, 0.0, 10.0]), np.array([0.5, 2.0, 0.05, 100.0])
    tok = ContinuousTokenizer(4, mean, std)
    x = torch.randn(5, 7, 4, generator=g, dtype=torch.float64).float() * 3
    torch.testing.assert_close(tok.decode(tok.encode(x)), x, rtol=1e-6, atol=1e-5)
    assert tok.decode(tok.encode(x)).shape == x.shape


def test_continuous_token_loss_is_mse_per_token():
    tok = ContinuousTokenizer(2, [0.0, 0.0], [1.0, 1.0])
    head = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]]])
    target = torch.tensor([[[[0.0, 0.0]], [[3.0, -1.0]]]])
    loss = tok.token_loss(head, target)
    assert loss.shape == (1, 2, 1)
    torch.testing.assert_close(loss, torch.tensor([[[2.5], [5.0]]]))


def test_binned_targets_encode_and_bins():
    tok = BinnedTokenizer(2, low=[0.0, -1.0], high=[1.0, 1.0], num_bins=4, name="actions")
    assert (tok.tokens_per_step, tok.input_dim, tok.output_dim) == (2, 4, 4)
    x = torch.tensor([[[0.1, -1.0], [0.3, -0.49], [0.99, 0.5], [1.0, 7.0], [-5.0, 0.0]]])  # (1, 5, 2)
    ids = tok.targets(x)
    assert ids.dtype == torch.long and ids.shape == (1, 5, 2)
    assert ids[0].tolist() == [[0, 0], [1, 1], [3, 3], [3, 3], [0, 2]]  # out of range -> edge bins
    enc = tok.encode(x)
    assert enc.shape == (1, 5, 2, 4)
    torch.testing.assert_close(enc, F.one_hot(ids, 4).float())


def test_binned_round_trip_within_half_a_bin():
    g = torch.Generator().manual_seed(1)
    low, high = np.array([-2.0, 0.0, 5.0]), np.array([2.0, 0.1, 9.0])
    tok = BinnedTokenizer(3, low, high, num_bins=16)
    x = torch.rand(4, 6, 3, generator=g) * torch.tensor(high - low).float() + torch.tensor(low).float()
    out = tok.decode(tok.encode(x))  # a one-hot is a perfect set of logits
    assert out.shape == x.shape
    half = torch.tensor((high - low) / 16 / 2).float()
    assert ((out - x).abs() <= half + 1e-6).all()
    # decode takes the arg-max bin's centre (not the expectation)
    logits = torch.zeros(1, 1, 3, 16)
    logits[..., 3] = 5.0
    logits[..., 10] = 4.9
    centre = torch.tensor(low).float() + 3.5 * torch.tensor((high - low) / 16).float()
    torch.testing.assert_close(tok.decode(logits)[0, 0], centre)


def test_binned_token_loss_is_cross_entropy_per_token():
    g = torch.Generator().manual_seed(2)
    tok = BinnedTokenizer(3, np.zeros(3), np.ones(3), num_bins=8)
    logits = torch.randn(2, 4, 3, 8, generator=g)
    ids = torch.randint(8, (2, 4, 3), generator=g)
    loss = tok.token_loss(logits, ids)
    assert loss.shape == (2, 4, 3)
    expected = -torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0]
    torch.testing.assert_close(loss, expected)


def test_binned_constant_dimension_and_nan_are_safe():
    tok = BinnedTokenizer(1, [2.0], [2.0], num_bins=4)
    x = torch.tensor([[[2.0], [float("nan")], [3.0]]])
    ids = tok.targets(x)
    assert ids.min() >= 0 and ids.max() <= 3
    out = tok.decode(tok.encode(x[:, :1]))
    assert torch.isfinite(out).all() and (out - 2.0).abs().max() < 1e-5


@pytest.mark.parametrize(
    "tok",
    [
        ContinuousTokenizer(3, [1.0, 2.0, 3.0], [0.5, 0.01, 4.0], min_std=0.2, name="states"),
        BinnedTokenizer(2, [-1.0, 0.0], [1.0, 3.0], num_bins=5, name="actions"),
    ],
)
def test_spec_and_state_dict_rebuild_exactly(tok):
    spec = json.loads(json.dumps(tok.spec()))
    rebuilt = tokenizer_from_spec(spec)
    rebuilt.load_state_dict(tok.state_dict())
    assert rebuilt.name == tok.name and rebuilt.spec() == tok.spec()
    x = torch.linspace(-2, 4, 3 * 4 * tok.dim).view(3, 4, tok.dim)
    torch.testing.assert_close(rebuilt.encode(x), tok.encode(x))
    torch.testing.assert_close(rebuilt.decode(tok.encode(x)), tok.decode(tok.encode(x)))
    assert all(not p.requires_grad for p in tok.parameters())  # statistics are buffers, not parameters
    assert len(tok.state_dict()) == 2


def test_bad_statistics_and_specs_raise_config_errors():
    with pytest.raises(ConfigError, match="expected 3"):
        ContinuousTokenizer(3, np.zeros(2), np.ones(3))
    with pytest.raises(ConfigError, match="NaN"):
        ContinuousTokenizer(1, [float("nan")], [1.0])
    with pytest.raises(ConfigError, match="max < min"):
        BinnedTokenizer(1, [1.0], [0.0], num_bins=4)
    with pytest.raises(ConfigError, match="unknown tokenizer type"):
        tokenizer_from_spec({"type": "video", "name": "x"})


def test_build_tokenizers_follows_the_tokens_section():
    from types import SimpleNamespace

    from mtm.config import RunConfig, load_config
    from mtm.model.tokenizers import TokenConfig, build_tokenizers

    stats = {name: SimpleNamespace(mean=np.zeros(dim), std=np.ones(dim), min=-np.ones(dim), max=np.ones(dim))
             for name, dim in (("states", 3), ("actions", 2), ("returns", 1))}
    cfg = load_config(RunConfig, None, ["tokens.states=binned", "tokens.num_bins=8", "tokens.use_returns=false"])
    assert isinstance(cfg.tokens, TokenConfig)  # the config section is the model side's dataclass
    tokenizers = build_tokenizers(cfg.tokens, stats, {"camera": (32, 32, 3)})
    assert list(tokenizers) == ["states", "camera", "actions"]  # states -> images -> (returns) -> actions
    assert isinstance(tokenizers["states"], BinnedTokenizer) and tokenizers["states"].num_bins == 8
    assert isinstance(tokenizers["actions"], ContinuousTokenizer)
    assert list(build_tokenizers(TokenConfig(), stats)) == ["states", "returns", "actions"]
    with pytest.raises(ValueError, match="num_bins must be >= 2"):
        TokenConfig(num_bins=1)
