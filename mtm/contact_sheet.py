"""A contact sheet: one PNG that shows what a policy did, no video player needed.

Each recorded episode gets ``tiles_per_episode`` frames, evenly spaced from the reset to its last,
``columns`` to a row, every episode on new rows; each tile is captioned with the episode, the step
and the return received up to that frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mtm.video import EpisodeFrames, write_media

TILES_PER_EPISODE = 8
COLUMNS = 4
_GAP = 2  # pixels between tiles (the background shows through)


def sample_steps(num_frames: int, tiles: int) -> list[int]:
    """Frame indices ``0 .. num_frames - 1``, evenly spaced, first and last included, no repeats."""
    if num_frames <= tiles:
        return list(range(num_frames))
    return sorted({int(round(i)) for i in np.linspace(0, num_frames - 1, tiles)})


def tile_label(episode: EpisodeFrames, step: int) -> str:
    text = f"ep {episode.index}  step {step}"
    if episode.returns is not None:
        text += f"  return {episode.returns[step]:.1f}"
    if step == len(episode.frames) - 1 and episode.terminated:
        text += "  (end)"
    return text


def contact_sheet(episodes: Sequence[EpisodeFrames], tiles_per_episode: int = TILES_PER_EPISODE,
                  columns: int = COLUMNS):
    """A PIL image of captioned tiles (see the module doc); frames keep their size."""
    if tiles_per_episode < 1 or columns < 1:
        raise ValueError("a contact sheet needs at least one tile per episode and one column")
    episodes = [e for e in episodes if e.frames]
    if not episodes:
        raise ValueError("no frames were recorded")
    height, width = episodes[0].frames[0].shape[:2]
    rows_of = [-(-len(sample_steps(len(e.frames), tiles_per_episode)) // columns) for e in episodes]
    sheet = Image.new("RGB", (columns * width + (columns - 1) * _GAP,
                              sum(rows_of) * height + (sum(rows_of) - 1) * _GAP), (32, 32, 32))
    font = _font(max(9, width // 18))
    row = 0
    for episode, rows in zip(episodes, rows_of):
        for k, step in enumerate(sample_steps(len(episode.frames), tiles_per_episode)):
            tile = Image.fromarray(np.asarray(episode.frames[step], dtype=np.uint8))
            _caption(ImageDraw.Draw(tile, "RGBA"), tile_label(episode, step), font, width)
            x = (k % columns) * (width + _GAP)
            y = (row + k // columns) * (height + _GAP)
            sheet.paste(tile, (x, y))
        row += rows
    return sheet


def _font(size: int):
    try:  # Pillow's own scalable font (Pillow >= 10.1, built with FreeType)
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()  # the fixed-size bitmap font


def _caption(draw, text: str, font, width: int) -> None:
    # Light text on a dark translucent band: readable over sky, floor and robot alike.
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 4)
    draw.rectangle((0, 0, width, bottom + 2 * pad), fill=(0, 0, 0, 150))
    draw.text((pad, pad), text, font=font, fill=(255, 255, 255, 255))


def write_contact_sheet(path: Path, episodes: Sequence[EpisodeFrames], **layout: int) -> Path:
    """``contact_sheet(episodes)`` as a PNG at ``path``, written atomically (mtm.video.write_media)."""
    return write_media(path, ".png", "writing the contact sheet",
                       lambda tmp: contact_sheet(episodes, **layout).save(tmp, format="PNG", optimize=True))
