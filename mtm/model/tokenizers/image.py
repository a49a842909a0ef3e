"""Images as tokens: one uint8 frame per step, (B, L, H, W, C) as stored -> k tokens per frame.

Three encoders; the network's per-modality Linear(input_dim -> width) then embeds each token:

    "patch" (default)  k = (H / p) * (W / p), each p x p patch flattened (input_dim = p * p * C): the
                       embedding Linear is ViT's patch projection; the tokenizer has no parameters
    "conv"             the same grid from log2(p) stride-2 3x3 convolutions with ReLU (input_dim =
                       last channel count; 32 channels doubling per layer up to 256 by default),
                       the "convolutional stem" of Xiao et al. 2021
    "keypoints"        ONE token per frame: 3x3 convolutions (strides 2, 2, 1, ...; 16, 32, 32
                       channels by default) -> a 1x1 convolution to K maps -> spatial softmax -> the
                       expected (x, y) of each map, in feature-map cells (input_dim = 2K); the deep
                       spatial autoencoder / robomimic encoder (Levine et al. 2016, Finn et al. 2016).
                       It gives "where is the thing" as coordinates directly, which a patch projection
                       must learn from pixel values. patch_size is unused.

k is the cost knob that matters: the Transformer over the image tokens dominates a step. Patch is
the default (faster than conv); on mtm/ReacherPixels-v0 keypoints are what made the model use its
frames (figures: BENCHMARKS.md, Images). Pixels are normalised as x / 255, then (x - mean) / std per
channel; the default mean = std = 0.5 maps them to [-1, 1], dataset statistics
(``mtm.data.image_windows.channel_stats``) standardise instead. A frame is one observation:
``mask_whole_steps`` makes the random training masks keep or hide its k tokens together.

Augmentation: ``augment_pad > 0`` applies a random shift (DrQ) in ``encode`` in training mode. All L
frames of a window share one shift: the camera jitters between samples, not between the steps of a
trajectory, whose motion the model must read. Shifts come from ``augment_generator`` when it is set
(e.g. the training step's generator, for reproducible runs), else from torch's global RNG.

``reconstruct=True`` predicts each token's normalised p x p patch of the un-augmented frame (MSE, as
MAE does). Otherwise (the default) the modality is input-only: ``output_dim = 0``, the network builds
no head for it and the loss skips it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mtm.errors import ConfigError
from mtm.model.tokenizers.base import Tokenizer, as_vector

ENCODERS = ("patch", "conv", "keypoints")
KEYPOINT_CHANNELS = (16, 32, 32)  # the keypoint encoder's default convolutions (strides 2, 2, 1)


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, L, H, W, C) frames shifted by up to ``pad`` pixels each way, one shift per window.

    Same result as replicate-padding by ``pad`` and cropping H x W at a random offset, done as a
    gather with clamped indices (no padded copy, works on uint8). Offsets are drawn with
    ``generator`` on its own device (the global RNG of the frames' device when None).
    """
    b, _, h, w, _ = frames.shape
    device = frames.device
    draw_device = generator.device if generator is not None else device
    shift = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=draw_device).to(device) - pad
    rows = (torch.arange(h, device=device) + shift[:, :1]).clamp(0, h - 1)  # (B, H)
    cols = (torch.arange(w, device=device) + shift[:, 1:]).clamp(0, w - 1)  # (B, W)
    batch = torch.arange(b, device=device)[:, None, None, None]
    step = torch.arange(frames.shape[1], device=device)[None, :, None, None]
    return frames[batch, step, rows[:, None, :, None], cols[:, None, None, :]]


class ImageTokenizer(Tokenizer):
    """uint8 (B, L, H, W, C) frames -> k = (H/p)(W/p) tokens per frame (see the module docstring)."""

    mask_whole_steps = True
    mask_role = "states"  # a frame is an observation: the masks show and hide it as they do states

    def __init__(self, height: int, width: int, channels: int = 3, *, encoder: str = "patch",
                 patch_size: int = 16, conv_channels: tuple[int, ...] | None = None, keypoints: int = 16,
                 mean: Any = 0.5, std: Any = 0.5, augment_pad: int = 0, reconstruct: bool = False,
                 name: str = "images") -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ConfigError(f"image tokenizer {name!r}: encoder must be one of {', '.join(ENCODERS)}, "
                              f"got {encoder!r}")
        if encoder == "keypoints":
            patch_size = 1  # unused: the token is the whole frame's keypoints
        if min(height, width, channels, patch_size) < 1 or height % patch_size or width % patch_size:
            raise ConfigError(f"image tokenizer {name!r}: frame {height}x{width} must divide into "
                              f"{patch_size}x{patch_size} patches")
        if augment_pad < 0:
            raise ConfigError(f"image tokenizer {name!r}: augment_pad must be >= 0, got {augment_pad}")
        self.name = name
        self.height, self.width, self.channels = int(height), int(width), int(channels)
        self.encoder = encoder
        self.patch_size = int(patch_size)
        self.augment_pad = int(augment_pad)
        self.reconstruct = bool(reconstruct)
        self.augment_generator: torch.Generator | None = None
        self.keypoints = int(keypoints) if encoder == "keypoints" else 0
        self.grid = (self.height // self.patch_size, self.width // self.patch_size)
        self.tokens_per_step = self.grid[0] * self.grid[1]
        self.patch_dim = self.patch_size * self.patch_size * self.channels
        self.output_dim = self.patch_dim if self.reconstruct else 0

        if encoder == "patch":
            self.conv_channels: tuple[int, ...] = ()
            self.stem = None
            self.input_dim = self.patch_dim
        elif encoder == "keypoints":
            if self.reconstruct:
                raise ConfigError(f"image tokenizer {name!r}: the keypoint encoder makes one token per "
                                  "frame, which cannot be decoded back into patches; use reconstruct=False "
                                  "or the patch encoder")
            if keypoints < 1:
                raise ConfigError(f"image tokenizer {name!r}: keypoints must be >= 1, got {keypoints}")
            chans = tuple(int(c) for c in (conv_channels or KEYPOINT_CHANNELS))
            if not chans or min(chans) < 1:
                raise ConfigError(f"image tokenizer {name!r}: conv_channels must be positive, got {list(chans)}")
            self.conv_channels = chans
            self.stem = KeypointStem(self.channels, chans, self.keypoints)
            self.grid, self.tokens_per_step = (1, 1), 1
            self.input_dim = 2 * self.keypoints
        else:
            depth = math.log2(self.patch_size)
            if depth != int(depth) or depth < 1:
                raise ConfigError(f"image tokenizer {name!r}: the conv encoder halves the frame per layer, "
                                  f"so patch_size must be a power of 2 >= 2, got {self.patch_size}")
            # Default: 32 channels, doubling per layer up to 256 (32, 64, 128, 256 for p = 16).
            default = tuple(min(32 * 2**i, 256) for i in range(int(depth)))
            chans = tuple(int(c) for c in (conv_channels or default))
            if len(chans) != int(depth) or min(chans) < 1:
                raise ConfigError(f"image tokenizer {name!r}: patch_size {self.patch_size} needs "
                                  f"{int(depth)} conv channel counts (one per stride-2 layer), got {list(chans)}")
            self.conv_channels = chans
            # ReLU between the convolutions, none after the last: the network's embedding Linear
            # follows directly, like the 1x1 convolution closing Xiao et al.'s stem.
            self.stem = nn.Sequential(*_conv_relus(self.channels, chans, [2] * len(chans))[:-1])
            self.input_dim = chans[-1]
        self.register_buffer("mean", as_vector(mean, self.channels, f"{name} mean"))
        self.register_buffer("std", as_vector(std, self.channels, f"{name} std"))
        if (self.std <= 0).any():
            raise ConfigError(f"image tokenizer {name!r}: std must be > 0 in every channel")

    def _check(self, raw: torch.Tensor) -> None:
        if raw.dim() != 5 or tuple(raw.shape[2:]) != (self.height, self.width, self.channels):
            raise ValueError(f"{self.name}: expected frames (B, L, {self.height}, {self.width}, "
                             f"{self.channels}), got {tuple(raw.shape)}")

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, L, H, W, C) uint8 -> float32 (x / 255 - mean) / std per channel."""
        return (raw.float() / 255.0 - self.mean) / self.std

    def patches(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, L, H, W, C) -> (B, L, k, p * p * C): row-major grid cells, each flattened (row, col, channel)."""
        b, l = frames.shape[:2]
        (gh, gw), p, c = self.grid, self.patch_size, self.channels
        x = frames.reshape(b, l, gh, p, gw, p, c).permute(0, 1, 2, 4, 3, 5, 6)
        return x.reshape(b, l, gh * gw, p * p * c)

    def encode(self, raw: torch.Tensor) -> torch.Tensor:
        self._check(raw)
        if self.training and self.augment_pad:
            raw = random_shift(raw, self.augment_pad, self.augment_generator)
        x = self.normalize(raw)
        if self.stem is None:
            return self.patches(x)
        return self._convolve(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def _convolve(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) normalised frames -> (N, k, input_dim) through the stem."""
        out = self.stem(frames.permute(0, 3, 1, 2))  # keypoints (N, 2K); conv (N, C', gh, gw)
        if self.encoder == "conv":
            out = out.flatten(2).transpose(1, 2)
        return out.reshape(frames.shape[0], self.tokens_per_step, self.input_dim)

    def encode_shown(self, raw: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        """`encode` of the shown steps, zeros at the others: a hidden frame's encoding is zeroed
        before the network embeds it, so skipping its convolutions changes no output or gradient
        and saves the image step's main cost (the `pixels` training masks hide about a tenth of
        the frames). `shown`: (B, L, k), a frame counts as shown where any of its tokens is. The
        random shift is drawn for every window first, as `encode` draws it, so the frames of a
        window keep sharing one shift."""
        shown = shown.any(-1)  # (B, L)
        if self.stem is None or bool(shown.all()):
            return self.encode(raw)
        self._check(raw)
        if self.training and self.augment_pad:
            raw = random_shift(raw, self.augment_pad, self.augment_generator)
        picked = shown.flatten().nonzero().squeeze(1)  # (n,) the shown steps of the B x L
        frames = raw.flatten(0, 1).index_select(0, picked)  # (n, H, W, C)
        x = self._convolve(self.normalize(frames))  # (n, k, input_dim)
        out = x.new_zeros(shown.numel(), *x.shape[1:]).index_copy(0, picked, x)
        return out.unflatten(0, shown.shape)

    def _require_head(self) -> None:
        if not self.reconstruct:
            raise RuntimeError(f"{self.name} is an input-only modality (reconstruct=False): it has no targets")

    def targets(self, raw: torch.Tensor) -> torch.Tensor:
        self._require_head()
        self._check(raw)
        return self.patches(self.normalize(raw))

    def token_loss(self, head_out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self._require_head()
        return (head_out.float() - targets).square().mean(-1)

    def decode(self, head_out: torch.Tensor) -> torch.Tensor:
        """(B, L, k, p * p * C) -> (B, L, H, W, C) float32 pixel values in [0, 255]."""
        self._require_head()
        b, l = head_out.shape[:2]
        (gh, gw), p, c = self.grid, self.patch_size, self.channels
        x = head_out.float().reshape(b, l, gh, gw, p, p, c).permute(0, 1, 2, 4, 3, 5, 6)
        x = x.reshape(b, l, self.height, self.width, c) * self.std + self.mean
        return (x * 255.0).clamp(0.0, 255.0)

    def spec(self) -> dict:
        return {"type": "image", "name": self.name, "height": self.height, "width": self.width,
                "channels": self.channels, "encoder": self.encoder, "patch_size": self.patch_size,
                "conv_channels": list(self.conv_channels), "keypoints": self.keypoints,
                "augment_pad": self.augment_pad, "reconstruct": self.reconstruct}

    @classmethod
    def from_spec(cls, spec: dict) -> "ImageTokenizer":
        """Rebuild from `spec()`; mean, std and the conv weights come with `load_state_dict`."""
        missing = [key for key in _SPEC_FIELDS if key not in spec]
        if missing:
            raise ConfigError(f"image tokenizer spec lacks {', '.join(missing)}")
        return cls(spec["height"], spec["width"], spec["channels"], encoder=spec["encoder"],
                   patch_size=spec["patch_size"], conv_channels=tuple(spec["conv_channels"]) or None,
                   keypoints=spec.get("keypoints") or 16,  # absent from checkpoints made before the encoder
                   augment_pad=spec["augment_pad"], reconstruct=spec["reconstruct"], name=spec["name"])


_SPEC_FIELDS = ("name", "height", "width", "channels", "encoder", "patch_size", "conv_channels",
                "augment_pad", "reconstruct")


def _conv_relus(in_channels: int, channels: tuple[int, ...], strides: list[int]) -> list[nn.Module]:
    """3x3 convolutions with the given strides, each followed by a ReLU. He initialisation keeps the
    activations' scale through the ReLUs; PyTorch's default init would shrink it by about 3x per
    layer, so the tokens would start near zero."""
    layers: list[nn.Module] = []
    for c_in, c_out, stride in zip((in_channels, *channels), channels, strides):
        conv = nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU()]
    return layers


class KeypointStem(nn.Module):
    """(N, C, H, W) normalised frames -> (N, 2K) keypoints: the expected (x, y) of each of K maps
    under a spatial softmax with a learned temperature (robomimic's SpatialSoftmax: sharp maps give
    precise points), in cells of the h x w feature map from its centre (x rightwards, y downwards;
    h = H/4 for the default strides, so +-7.5 for 64 px frames). The first two convolutions have
    stride 2: a quarter of the pixels' cost for every later layer, still ~3 px of a 64 px frame per
    cell, and the softmax's expectation interpolates between cells."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], keypoints: int):
        super().__init__()
        strides = [2 if i < 2 else 1 for i in range(len(channels))]
        self.features = nn.Sequential(*_conv_relus(in_channels, channels, strides))
        self.to_maps = nn.Conv2d(channels[-1], keypoints, kernel_size=1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.to_maps(self.features(x))  # (N, K, h, w)
        n, k, h, w = maps.shape
        # Each map standardised over its positions before the softmax: at initialisation its values
        # differ by ~1e-2 across a frame, so a plain softmax is flat and every keypoint sits at the
        # centre (the token carries nothing, learns slowly); standardised, a map peaks at its object.
        flat = maps.flatten(2).float()
        flat = (flat - flat.mean(-1, keepdim=True)) / (flat.std(-1, keepdim=True) + 1e-5)
        weights = torch.softmax(flat / self.log_temperature.exp(), dim=-1)  # (N, K, h*w)
        # Coordinates in feature-map cells from the centre, not in [-1, 1], where their spread across
        # frames is ~0.05-0.4 against ~1 for the z-scored tokens of other modalities: the network
        # learned to ignore that ~10x weaker signal (BENCHMARKS.md, Images).
        ys = torch.linspace(-(h - 1) / 2, (h - 1) / 2, h, device=x.device)
        xs = torch.linspace(-(w - 1) / 2, (w - 1) / 2, w, device=x.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        px = (weights * grid_x.reshape(1, 1, -1)).sum(-1)
        py = (weights * grid_y.reshape(1, 1, -1)).sum(-1)
        return torch.stack([px, py], dim=-1).reshape(n, 2 * k)
