import pytest
import torch

from mtm.errors import ConfigError
from mtm.model.loss import mtm_loss
from mtm.model.tokenizers import BinnedTokenizer, ContinuousTokenizer

torch.set_num_threads(1)

L = 3


def setup():
    toks = {
        "states": ContinuousTokenizer(2, [0.0, 0.0], [1.0, 1.0], name="states"),
        "actions": BinnedTokenizer(1, [0.0], [1.0], num_bins=2, name="actions"),
    }
    # B = 2, L = 3. states targets are the raw values (mean 0, std 1).
    batch = {
        "states": torch.tensor(
            [[[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]], [[0.0, 0.0], [0.0, 2.0], [float("nan"), 0.0]]]
        ),
        "actions": torch.tensor([[[0.2], [0.7], [0.2]], [[0.7], [0.7], [0.2]]]),  # bins 0 1 0 / 1 1 0
    }
    out = {
        "states": torch.zeros(2, L, 1, 2),  # per-token MSE = mean of squares of the raw values
        "actions": torch.zeros(2, L, 1, 2),  # uniform logits: CE = log 2 everywhere
    }
    out["actions"][0, 0, 0] = torch.tensor([0.0, 1.0])  # target bin 0: CE = log(1 + e)
    return toks, batch, out


# per-token losses (B, L): states [[1, 0, 2], [0, 2, nan]]; actions [[log(1+e), log2, log2], [log2]*3]
S_TOK = torch.tensor([[1.0, 0.0, 2.0], [0.0, 2.0, float("nan")]])
A_TOK = torch.full((2, L), torch.log(torch.tensor(2.0)).item())
A_TOK[0, 0] = torch.log(1 + torch.exp(torch.tensor(1.0))).item()

# token order: states t0..t2, actions t0..t2
VISIBLE = torch.tensor([[True, False, True, True, False, False], [False, True, False, True, True, False]])
VALID = torch.tensor([[True, True, True], [True, True, False]])


def test_all_tokens_of_real_steps_count():
    toks, batch, out = setup()
    total, per = mtm_loss(out, batch, toks, VISIBLE, VALID, on="all")
    torch.testing.assert_close(per["states"], torch.tensor((1 + 0 + 2 + 0 + 2) / 5))  # the NaN is padding
    torch.testing.assert_close(per["actions"], A_TOK[VALID].mean())
    torch.testing.assert_close(total, per["states"] + per["actions"])


def test_token_weights_scale_each_steps_loss_and_keep_the_count_as_divisor():
    toks, batch, out = setup()
    w = torch.tensor([[2.0, 0.0, 1.0], [1.0, 3.0, 5.0]])  # (b1, t2) is padding: its weight is never read
    total, per = mtm_loss(out, batch, toks, VISIBLE, VALID, on="all", token_weights={"actions": w})
    torch.testing.assert_close(per["actions"], (A_TOK * w)[VALID].sum() / 5)
    torch.testing.assert_close(per["states"], torch.tensor(1.0))  # an unweighted modality is unchanged
    ones, _ = mtm_loss(out, batch, toks, VISIBLE, VALID, on="all", token_weights={"actions": torch.ones(2, L)})
    torch.testing.assert_close(ones, mtm_loss(out, batch, toks, VISIBLE, VALID, on="all")[0])


def test_masked_counts_hidden_tokens_only():
    toks, batch, out = setup()
    total, per = mtm_loss(out, batch, toks, VISIBLE, VALID, on="masked")
    # hidden real states: (b0, t1) = 0, (b1, t0) = 0, (b1, t2) is padding -> (0 + 0) / 2
    torch.testing.assert_close(per["states"], torch.tensor(0.0))
    # hidden real actions: (b0, t1), (b0, t2), (b1, t2) is padding -> log 2
    torch.testing.assert_close(per["actions"], A_TOK[0, 1:].mean())
    torch.testing.assert_close(total, per["states"] + per["actions"])


def test_weights_and_broadcast_mask():
    toks, batch, out = setup()
    _, per = mtm_loss(out, batch, toks, VISIBLE[0], None, on="masked")
    # the one mask (row 0) for both samples, every step real: the NaN (b1, t2) state is visible
    torch.testing.assert_close(per["states"], torch.tensor((0.0 + 2.0) / 2))
    total, per = mtm_loss(out, batch, toks, VISIBLE, VALID, weights={"actions": 0.5})
    torch.testing.assert_close(total, per["states"] + 0.5 * per["actions"])
    with pytest.raises(ConfigError):
        mtm_loss(out, batch, toks, VISIBLE, VALID, weights={"images": 1.0})
    with pytest.raises(ConfigError):
        mtm_loss(out, batch, toks, VISIBLE, VALID, on="visible")


def test_nothing_counted_gives_zero_and_gradients_flow():
    toks, batch, out = setup()
    out = {k: v.clone().requires_grad_() for k, v in out.items()}
    total, per = mtm_loss(out, batch, toks, torch.ones(2 * L, dtype=torch.bool), VALID, on="masked")
    assert total.item() == 0.0 and per["states"].item() == 0.0
    total, _ = mtm_loss(out, batch, toks, VISIBLE, VALID)
    total.backward()
    assert torch.isfinite(out["states"].grad).all()
    assert out["states"].grad[1, 2].abs().sum() == 0  # padding gets no gradient
