"""mtm.model.dropout: the cheaper CPU mask keeps nn.Dropout's distribution, expectation and gradient."""

import pytest
import torch

from mtm.model.dropout import Dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_mask_drops_p_of_the_elements(p):
    torch.manual_seed(0)
    keep, p_eff = keep_mask((400_000,), p)
    assert abs(p_eff - p) <= 1 / 65536
    assert abs((1 - keep.float().mean().item()) - p) < 0.003  # ~4 sigma at n = 4e5
    # no structure across the three halves of a word: each position drops at the same rate
    per_slot = 1 - keep[: 399_999].view(-1, 3).float().mean(0)
    assert torch.allclose(per_slot, torch.full((3,), p), atol=0.006)


def test_odd_sizes_and_shapes():
    for shape in [(1,), (2,), (7, 5), (3, 4, 5, 6)]:
        keep, _ = keep_mask(shape, 0.3)
        assert keep.shape == torch.Size(shape) and keep.dtype == torch.bool


def test_forward_scales_kept_values_and_zeroes_the_rest():
    torch.manual_seed(1)
    drop = Dropout(0.2).train()
    x = torch.randn(5000, 8) + 3.0
    y = drop(x)
    kept = y != 0
    p_eff = round(0.2 * 65536) / 65536
    assert torch.allclose(y[kept], x[kept] / (1 - p_eff))
    assert abs(y.mean().item() - x.mean().item()) < 0.05  # expectation preserved


def test_backward_is_the_same_mask_and_scale():
    torch.manual_seed(2)
    x = torch.randn(300, 16, requires_grad=True)
    y = Dropout(0.1).train()(x)
    y.backward(torch.ones_like(y))
    p_eff = round(0.1 * 65536) / 65536
    expected = (y.detach() != 0).float() / (1 - p_eff)
    assert torch.equal(x.grad, expected)


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(10, 4)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x


def test_seeded_masks_repeat():
    x = torch.randn(64, 32)
    torch.manual_seed(3)
    a = Dropout(0.1).train()(x)
    torch.manual_seed(3)
    b = Dropout(0.1).train()(x)
    assert torch.equal(a, b)


def test_same_state_dict_as_nn_dropout():
    assert Dropout(0.1).state_dict() == torch.nn.Dropout(0.1).state_dict() == {}
