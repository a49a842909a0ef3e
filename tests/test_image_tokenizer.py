import json
import math

import numpy as np
import pytest
import torch

from mtm.errors import ConfigError
from mtm.model.tokenizers.image import ImageTokenizer, random_shift
from mtm.model.loss import mtm_loss
from mtm.model.masks import MaskMixture, TokenLayout, bc_mask, random_autoregressive_mask, random_mask
from mtm.model.network import MTM, ModelConfig
from mtm.model.tokenizers import ContinuousTokenizer, tokenizer_from_spec

torch.set_num_threads(1)

B, L, H, S, A = 3, 4, 16, 5, 2
TINY = dict(width=32, encoder_layers=1, decoder_layers=1, heads=4, dropout=0.0)


def frames(seed=0, batch=B):
    return torch.randint(0, 256, (batch, L, H, H, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_patch_encoder_shapes_values_and_patch_order():
    tok = ImageTokenizer(H, H, 3, patch_size=4)
    assert (tok.tokens_per_step, tok.input_dim, tok.output_dim) == (16, 48, 0)
    assert sum(p.numel() for p in tok.parameters()) == 0  # the network's embedding Linear is the projection
    x = frames()
    z = tok.encode(x)
    assert z.shape == (B, L, 16, 48) and z.dtype == torch.float32
    assert z.min() >= -1.0 and z.max() <= 1.0  # default normalisation: [0, 255] -> [-1, 1]
    # Token 6 = grid row 1, column 2: the 4x4 patch at pixels [4:8, 8:12], flattened (row, col, channel).
    patch = x[1, 2, 4:8, 8:12].float() / 127.5 - 1.0
    torch.testing.assert_close(z[1, 2, 6], patch.reshape(-1))


def test_dataset_statistics_standardise_per_channel():
    mean, std = [0.2, 0.5, 0.8], [0.1, 0.2, 0.4]
    tok = ImageTokenizer(H, H, 3, patch_size=8, mean=mean, std=std)
    x = torch.tensor([0.2, 0.5, 0.8]).mul(255).round().to(torch.uint8).expand(1, L, H, H, 3)
    assert tok.encode(x).abs().max() < 0.02
    with pytest.raises(ConfigError, match="std must be > 0"):
        ImageTokenizer(H, H, 3, std=[0.1, 0.0, 0.1])


def test_conv_encoder_gives_the_same_grid():
    torch.manual_seed(0)
    tok = ImageTokenizer(H, H, 3, encoder="conv", patch_size=4, conv_channels=(8, 12))
    assert (tok.tokens_per_step, tok.input_dim) == (16, 12)
    z = tok.encode(frames())
    assert z.shape == (B, L, 16, 12) and torch.isfinite(z).all() and z.std() > 0.1
    # Token j depends on its own grid cell's neighbourhood: changing the bottom-right corner of frame
    # (0, 0) changes its last token and leaves the top-left token and other frames alone.
    x = frames()
    x[0, 0, -3:, -3:] = 255 - x[0, 0, -3:, -3:]
    z2 = tok.encode(x)
    assert not torch.allclose(z[0, 0, -1], z2[0, 0, -1])
    torch.testing.assert_close(z[0, 0, 0], z2[0, 0, 0])
    torch.testing.assert_close(z[:, 1:], z2[:, 1:])
    with pytest.raises(ConfigError, match="power of 2"):
        ImageTokenizer(12, 12, 3, encoder="conv", patch_size=6)
    with pytest.raises(ConfigError, match="needs 2 conv channel counts"):
        ImageTokenizer(H, H, 3, encoder="conv", patch_size=4, conv_channels=(8,))


def test_bad_configuration_and_inputs():
    with pytest.raises(ConfigError, match="divide into 5x5 patches"):
        ImageTokenizer(16, 16, 3, patch_size=5)
    with pytest.raises(ConfigError, match="encoder must be one of patch, conv, keypoints"):
        ImageTokenizer(16, 16, 3, encoder="vit")
    with pytest.raises(ValueError, match=r"expected frames \(B, L, 16, 16, 3\)"):
        ImageTokenizer(16, 16, 3, patch_size=8).encode(torch.zeros(1, L, 8, 8, 3, dtype=torch.uint8))


@pytest.mark.parametrize("encoder", ["patch", "conv", "keypoints"])
def test_spec_round_trip_rebuilds_the_tokenizer(encoder):
    torch.manual_seed(1)
    tok = ImageTokenizer(H, H, 3, encoder=encoder, patch_size=8, mean=[0.3, 0.4, 0.5], std=[0.2, 0.3, 0.25],
                         augment_pad=2, reconstruct=encoder != "keypoints", keypoints=5, name="pixels")
    spec = json.loads(json.dumps(tok.spec()))
    rebuilt = tokenizer_from_spec(spec)
    assert isinstance(rebuilt, ImageTokenizer) and rebuilt.spec() == tok.spec()
    rebuilt.load_state_dict(tok.state_dict())
    tok.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt.encode(frames()), tok.encode(frames()))
    with pytest.raises(ConfigError, match="spec lacks height"):
        tokenizer_from_spec({"type": "image", **{k: v for k, v in spec.items() if k != "height"}})


def test_keypoint_encoder_gives_one_token_of_coordinates_per_frame():
    torch.manual_seed(0)
    tok = ImageTokenizer(H, H, 3, encoder="keypoints", keypoints=6, conv_channels=(8, 8, 8))
    assert (tok.tokens_per_step, tok.input_dim, tok.output_dim, tok.grid) == (1, 12, 0, (1, 1))
    z = tok.encode(frames())
    assert z.shape == (B, L, 1, 12) and torch.isfinite(z).all()
    # Expected coordinates over the 4 x 4 feature map (16 px, strides 2, 2), in cells from its centre.
    assert z.abs().max() <= 1.5
    assert z.std() > 0  # different frames, different points
    with pytest.raises(ConfigError, match="cannot be decoded back into patches"):
        ImageTokenizer(H, H, 3, encoder="keypoints", reconstruct=True)
    with pytest.raises(ConfigError, match="keypoints must be >= 1"):
        ImageTokenizer(H, H, 3, encoder="keypoints", keypoints=0)


def test_spatial_softmax_points_at_the_brightest_place():
    # Bypass the convolutions: one map = the red channel at full resolution, sharpened (low
    # temperature), so each keypoint is where a lone bright pixel is; x runs left to right and y
    # top to bottom, in pixels (here: cells) from the centre, -7.5 .. 7.5 for 16 px.
    tok = ImageTokenizer(H, H, 3, encoder="keypoints", keypoints=1)
    stem = tok.stem
    stem.features = torch.nn.Identity()
    stem.to_maps = torch.nn.Conv2d(3, 1, 1)
    with torch.no_grad():
        stem.to_maps.weight.zero_()
        stem.to_maps.weight[0, 0] = 1.0
        stem.to_maps.bias.zero_()
        stem.log_temperature.fill_(math.log(0.01))
    x = torch.zeros(2, 1, H, H, 3, dtype=torch.uint8)
    x[0, 0, 0, H - 1, 0] = 255  # top-right
    x[1, 0, 5, 10, 0] = 255  # row 5, column 10
    z = tok.encode(x)[:, 0, 0]
    torch.testing.assert_close(z[0], torch.tensor([7.5, -7.5]), atol=1e-3, rtol=0)
    torch.testing.assert_close(z[1], torch.tensor([10 - 7.5, 5 - 7.5]), atol=1e-3, rtol=0)


def test_keypoint_specs_from_before_the_encoder_still_load():
    spec = ImageTokenizer(H, H, 3, patch_size=8).spec()
    del spec["keypoints"]
    assert tokenizer_from_spec(spec).spec()["keypoints"] == 0


def test_random_shift_is_a_replicate_padded_crop_shared_by_the_window():
    x = frames(3, batch=6)
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    for b in range(6):
        crops = {(dy, dx) for dy in range(5) for dx in range(5)
                 if np.array_equal(out[b].numpy(), padded[b, :, dy : dy + H, dx : dx + H])}
        assert len(crops) >= 1  # one offset explains all L frames of the window at once
    shifted = [not torch.equal(out[b], x[b]) for b in range(6)]
    assert any(shifted)
    assert torch.equal(out, random_shift(x, 2, torch.Generator().manual_seed(0)))  # deterministic
    assert not torch.equal(out, random_shift(x, 2, torch.Generator().manual_seed(1)))


def test_augmentation_only_in_training_mode_and_reproducible():
    tok = ImageTokenizer(H, H, 3, patch_size=8, augment_pad=3)
    x = frames(4)
    plain = ImageTokenizer(H, H, 3, patch_size=8).encode(x)
    tok.eval()
    torch.testing.assert_close(tok.encode(x), plain)
    tok.train()
    tok.augment_generator = torch.Generator().manual_seed(7)
    first = tok.encode(x)
    tok.augment_generator = torch.Generator().manual_seed(7)
    torch.testing.assert_close(tok.encode(x), first)
    assert not torch.allclose(first, plain)


# -- masks -----------------------------------------------------------------------------------------


def image_layout(first="states"):
    image = ImageTokenizer(H, H, 3, patch_size=8, name="images")  # k = 4
    states = ContinuousTokenizer(S, np.zeros(S), np.ones(S), name="states")
    actions = ContinuousTokenizer(A, np.zeros(A), np.ones(A), name="actions")
    order = {"states": states, "images": image} if first == "states" else {"images": image, "states": states}
    return TokenLayout.from_tokenizers({**order, "actions": actions}, L)


def frame_decisions(layout, mask):
    """(B, L, k) visibility of the image tokens."""
    return mask[:, layout.slice("images")].view(mask.shape[0], L, layout.tokens_per_step["images"])


def test_training_masks_keep_or_hide_image_frames_whole():
    layout = image_layout()
    assert layout.whole_steps == {"images"}
    g = torch.Generator().manual_seed(0)
    for mask in (
        random_mask(layout, 256, g),
        random_autoregressive_mask(layout, 256, g),
        MaskMixture({"random": 1, "random_autoregressive": 1, "bc": 1})(layout, 256, g),
    ):
        grid = frame_decisions(layout, mask)
        assert (grid.all(-1) | ~grid.any(-1)).all()  # every frame is all visible or all hidden
        assert grid.any() and (~grid).any()
    # The keep ratio counts frames: keeping half of L = 4 frames shows exactly 2 of them.
    half = frame_decisions(layout, random_mask(layout, 64, g, keep_ratios=(0.5,)))
    assert (half.all(-1).sum(1) == 2).all()
    # States (k = 1) are drawn per token as before.
    states = random_mask(layout, 64, g, keep_ratios=(0.5,))[:, layout.slice("states")]
    assert (states.sum(1) == 2).all()


def test_a_hand_made_mask_can_still_hide_single_patches():
    layout = image_layout()
    mask = bc_mask(layout, 2).clone()
    mask[layout.index("images", 1, 3)] = False
    assert layout.format(mask).startswith("states ###. | images #### ###. #### ....")


def test_empty_masks_show_a_whole_first_frame():
    layout = image_layout(first="images")
    mask = random_mask(layout, 8, torch.Generator().manual_seed(0), keep_ratios=(0.1,))  # keeps none of 4
    assert mask.sum(1).tolist() == [4] * 8
    assert mask[:, layout.slice("images")][:, :4].all()


# -- network and loss --------------------------------------------------------------------------------


def image_model(reconstruct=False, augment_pad=0, encoder="patch"):
    torch.manual_seed(0)
    toks = {
        "states": ContinuousTokenizer(S, np.zeros(S), np.ones(S), name="states"),
        "images": ImageTokenizer(H, H, 3, patch_size=8, augment_pad=augment_pad, reconstruct=reconstruct,
                                 encoder=encoder),
        "actions": ContinuousTokenizer(A, np.zeros(A), np.ones(A), name="actions"),
    }
    return MTM(ModelConfig(**TINY), toks, L)


def image_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"states": torch.randn(B, L, S, generator=g), "images": frames(seed),
            "actions": torch.rand(B, L, A, generator=g) * 2 - 1, "valid": torch.ones(B, L, dtype=torch.bool)}


@pytest.mark.parametrize("encoder", ["patch", "keypoints"])
def test_input_only_images_have_no_head_and_no_loss_but_get_gradients(encoder):
    model = image_model(encoder=encoder)
    assert model.layout.tokens_per_step["images"] == (1 if encoder == "keypoints" else 4)
    assert set(model.heads) == {"states", "actions"} and "images" in model.embed
    batch = image_batch()
    visible = random_autoregressive_mask(model.layout, B, torch.Generator().manual_seed(0))
    visible[:, model.layout.slice("images")] = True
    out = model(batch, visible)
    assert set(out) == {"states", "actions"}
    assert set(model.predict(batch, visible)) == {"states", "actions"}
    total, parts = mtm_loss(out, batch, model.tokenizers, visible, batch["valid"], weights={"images": 5.0})
    assert set(parts) == {"states", "actions"}
    torch.testing.assert_close(total, parts["states"] + parts["actions"])
    total.backward()
    assert model.embed["images"].weight.grad.abs().sum() > 0  # the frames inform the predictions
    if encoder == "keypoints":  # ... back through the spatial softmax into the convolutions
        assert model.tokenizers["images"].stem.features[0].weight.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="input-only"):
        model.tokenizers["images"].targets(batch["images"])


def test_hidden_frames_do_not_reach_the_model():
    model = image_model().eval()
    batch = image_batch()
    mask = bc_mask(model.layout, 2)  # frames 0..2 visible, frame 3 hidden
    out = model(batch, mask)
    changed = dict(batch, images=batch["images"].clone())
    changed["images"][:, 3] = 255 - changed["images"][:, 3]
    torch.testing.assert_close(model(changed, mask)["actions"], out["actions"])
    changed["images"][:, 1] = 0
    assert not torch.allclose(model(changed, mask)["actions"], out["actions"])


@pytest.mark.parametrize("encoder,augment_pad", [("keypoints", 0), ("keypoints", 2), ("conv", 0)])
def test_hidden_frames_are_not_convolved_and_nothing_changes(encoder, augment_pad):
    """Training forwards encode only the frames the mask shows: outputs and every gradient are
    those of encoding all of them (the static forward, a CUDA graph's, still does), and a window's
    frames keep sharing one random shift."""
    model = image_model(encoder=encoder, augment_pad=augment_pad).train()
    if encoder == "conv":
        model = MTM(ModelConfig(**TINY), {**model.tokenizers, "images": ImageTokenizer(
            H, H, 3, patch_size=4, encoder="conv")}, L)
    tok = model.tokenizers["images"]
    batch = image_batch()
    visible = bc_mask(model.layout, 2).expand(B, -1).clone()  # frames 0..2 shown, 3 hidden
    images = visible[:, model.layout.slice("images")].view(B, L, -1)
    images[0, 1] = images[2, 0] = False  # and a few more, in different samples
    visible[:, model.layout.slice("images")] = images.flatten(1)
    frames_shown = images.any(-1)
    assert int(frames_shown.sum()) == B * L - B - 2
    convolved = []
    hook = tok.stem.register_forward_hook(lambda m, args, out: convolved.append(args[0].shape[0]))

    def run(static):
        model.zero_grad()
        tok.augment_generator = torch.Generator().manual_seed(11)
        out = model(batch, visible, static=static)
        total, _ = mtm_loss(out, batch, model.tokenizers, visible, batch["valid"])
        total.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    every, every_grads = run(static=True)
    shown, shown_grads = run(static=False)
    hook.remove()
    assert convolved == [B * L, int(frames_shown.sum())]
    for name in every:
        torch.testing.assert_close(shown[name], every[name], atol=1e-5, rtol=1e-4)
    assert every_grads.keys() == shown_grads.keys()
    assert any(n.startswith("tokenizers.images.stem") for n in every_grads)
    for name, grad in every_grads.items():
        torch.testing.assert_close(shown_grads[name], grad, atol=1e-5, rtol=1e-4)


def test_reconstruction_predicts_normalised_patches():
    model = image_model(reconstruct=True)
    tok = model.tokenizers["images"]
    assert tok.output_dim == 8 * 8 * 3 and "images" in model.heads
    batch = image_batch()
    targets = tok.targets(batch["images"])
    assert targets.shape == (B, L, 4, 192)
    torch.testing.assert_close(tok.decode(targets), batch["images"].float(), atol=1e-3, rtol=0)
    visible = random_autoregressive_mask(model.layout, B, torch.Generator().manual_seed(0))
    out = model(batch, visible)
    assert out["images"].shape == (B, L, 4, 192)
    _, parts = mtm_loss(out, batch, model.tokenizers, visible, batch["valid"])
    assert set(parts) == {"states", "images", "actions"} and parts["images"] > 0


def test_model_spec_round_trip_with_images():
    model = image_model(augment_pad=2).eval()
    rebuilt = MTM.from_spec(json.loads(json.dumps(model.spec())))
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    batch, mask = image_batch(), bc_mask(model.layout)
    torch.testing.assert_close(rebuilt(batch, mask)["actions"], model(batch, mask)["actions"])


# -- fused observations (model.fuse_observations) ------------------------------------------------------


def fused_model(fuse=16, encoder="keypoints", query=False):
    torch.manual_seed(0)
    toks = {
        "states": ContinuousTokenizer(S, np.zeros(S), np.ones(S), name="states"),
        "images": ImageTokenizer(H, H, 3, encoder=encoder, keypoints=4, patch_size=8),
        "actions": ContinuousTokenizer(A, np.zeros(A), np.ones(A), name="actions"),
    }
    return MTM(ModelConfig(**TINY, fuse_observations=fuse, fuse_query=query), toks, L).eval()


def test_fusion_gives_each_observation_token_the_state_and_the_frame():
    """With fuse_observations the frame's token carries the state of its step (and the state's token
    the frame), before any attention; without it each token embeds its own modality alone."""
    batch = image_batch()
    visible = bc_mask(fused_model().layout, L - 1)
    moved = dict(batch, states=batch["states"] + 1.0)
    for fuse in (0, 16):
        model = fused_model(fuse)
        frames_in = model._encoder_inputs(batch, visible.expand(B, -1))[0][:, model.layout.slice("images")]
        frames_moved = model._encoder_inputs(moved, visible.expand(B, -1))[0][:, model.layout.slice("images")]
        assert torch.equal(frames_in, frames_moved) == (fuse == 0)
    assert fused_model(16).fuse[0].in_features == S + 1 + 2 * 4 + 1  # state, frame, a shown flag each


@pytest.mark.parametrize("encoder,query", [("keypoints", False), ("keypoints", True), ("patch", True)])
def test_fusion_lets_no_hidden_observation_through(encoder, query):
    """A hidden state or frame reaches no output through the fused MLP (nor, with fuse_query, through
    the action tokens): its values (NaN included) do not matter, and the shown ones still do."""
    model = fused_model(encoder=encoder, query=query)
    batch = image_batch()
    visible = random_autoregressive_mask(model.layout, B, torch.Generator().manual_seed(5))
    visible[0, model.layout.slice("states")] = False  # sample 0: every state hidden, frames as drawn
    visible[1, model.layout.slice("images")] = False  # sample 1: every frame hidden
    visible[:, model.layout.index("states", 0)] |= torch.arange(B) != 0  # something shown at step 0
    before = model(batch, visible)
    changed = dict(batch, states=batch["states"].clone(), images=batch["images"].clone())
    changed["states"][~visible[:, model.layout.slice("states")]] = float("nan")
    frames_hidden = ~visible[:, model.layout.slice("images")].view(B, L, -1).any(-1)
    changed["images"][frames_hidden] = 255 - changed["images"][frames_hidden]
    after = model(changed, visible)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0)
    shown_state = visible[2, model.layout.slice("states")].nonzero()[0, 0]
    changed["states"][2, shown_state] += 1.0
    assert not torch.equal(model(changed, visible)["actions"][2], before["actions"][2])


@pytest.mark.parametrize("query", [False, True])
def test_fused_models_round_trip_and_match_their_static_forward(query):
    model = fused_model(query=query)
    batch = image_batch()
    mask = bc_mask(model.layout, 2)
    rebuilt = MTM.from_spec(json.loads(json.dumps(model.spec()))).eval()
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config.fuse_observations == 16 and rebuilt.fuse is not None
    assert (rebuilt.fuse_query is not None) == query
    out = model(batch, mask)
    for name, static in model(batch, mask, static=True).items():
        torch.testing.assert_close(rebuilt(batch, mask)[name], out[name])
        torch.testing.assert_close(static, out[name], atol=1e-5, rtol=1e-5)


def test_fusion_settings_are_checked():
    with pytest.raises(ValueError, match="fuse_observations must be >= 0"):
        ModelConfig(fuse_observations=-1)
    with pytest.raises(ValueError, match="fuse_query needs fuse_observations > 0"):
        ModelConfig(fuse_query=True)
    only_actions = {"actions": ContinuousTokenizer(A, np.zeros(A), np.ones(A), name="actions")}
    with pytest.raises(ConfigError, match="fuse_observations .* has none; set it to 0"):
        MTM(ModelConfig(**TINY, fuse_observations=8), only_actions, L)
    # One observation modality (a run with tokens.image_keys=[]): an MLP over the state alone.
    states = {"states": ContinuousTokenizer(S, np.zeros(S), np.ones(S), name="states"), **only_actions}
    assert MTM(ModelConfig(**TINY, fuse_observations=8), states, L).fuse[0].in_features == S + 1


def test_fuse_query_starts_the_action_query_from_the_steps_observations():
    """With fuse_query the decoder's action token at step t (a mask token when hidden) carries the
    fused observations of step t: moving the state of step 1 changes the action token of step 1's
    decoder input and no other step's."""
    model = fused_model(query=True)
    batch = image_batch()
    visible = bc_mask(model.layout, L - 1).expand(B, -1)
    moved = dict(batch, states=batch["states"].clone())
    moved["states"][:, 1] += 1.0
    inputs = []
    for b in (batch, moved):
        embedded, fused = model._encoder_inputs(b, visible)
        inputs.append(model._decoder_inputs(embedded, visible, fused)[:, model.layout.slice("actions")])
    changed = (inputs[0] != inputs[1]).any(-1).any(0)  # (L,) per step
    assert changed.tolist() == [False, True, False, False]
