"""Rollout videos and contact sheets: frames of the robot, rendered fast, from a camera that follows it.

Every video mtm writes comes from ``evaluate_policy``, which records frames with ``FrameRecorder``:
from ``envs.camera.robot_camera`` over a floor drawn under the robot wherever it runs
(``envs.camera.FloorUnderRobot``), by a renderer of its own rather than the env's ``render()``. Its
quality preset chooses MuJoCo's costly effects: on a CPU (EGL renders in software there) shadows,
reflections and anti-aliasing dominate the cost (BENCHMARKS.md, Video rendering); ``fast``, the
default, turns them off, ``nice`` keeps MuJoCo's own look. The env's own renderer (the one pixel
observations come from) keeps its settings: a video never changes what a pixel policy sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs import headless_rendering_default

headless_rendering_default()  # MuJoCo fixes its GL backend when imported: EGL without a display

import mujoco  # noqa: E402

from envs.camera import FloorUnderRobot, robot_camera  # noqa: E402
from mtm.errors import ConfigError, OutputError  # noqa: E402
from mtm.io import atomic_write_file, remove_stale_temps, short_reason, write_failure  # noqa: E402


@dataclass(frozen=True)
class RenderQuality:
    """Which of MuJoCo's costly effects a video frame gets."""

    shadows: bool
    reflections: bool
    multisamples: int  # offscreen anti-aliasing samples; MuJoCo's default is 4
    skybox: bool


QUALITIES: dict[str, RenderQuality] = {
    # The skybox stays: dropping it gains little (BENCHMARKS.md), and the sky turns black.
    "fast": RenderQuality(shadows=False, reflections=False, multisamples=0, skybox=True),
    # MuJoCo's defaults: what gymnasium's render() draws.
    "nice": RenderQuality(shadows=True, reflections=True, multisamples=4, skybox=True),
}
DEFAULT_QUALITY = "fast"
DEFAULT_SIZE = 256
MAX_SIZE = 2048
_SHADOW_MAP = 4096  # MuJoCo's default shadow-map size, for "nice" on models whose map was turned off


def check_quality(name: str) -> RenderQuality:
    """The preset called ``name``; ConfigError for any other name."""
    if name not in QUALITIES:
        raise ConfigError(f"video quality must be one of {', '.join(QUALITIES)}, got {name!r}")
    return QUALITIES[name]


def check_size(size: int) -> int:
    if not 16 <= int(size) <= MAX_SIZE:
        raise ConfigError(f"video frame size must be between 16 and {MAX_SIZE} pixels, got {size}")
    return int(size)


@dataclass(frozen=True)
class RolloutMedia:
    """What to draw of an evaluation: an mp4, a contact sheet (PNG), or both, of its first episodes."""

    video: Path | None = None
    contact_sheet: Path | None = None
    episodes: int = 1  # the first N episodes (by index) are recorded
    quality: str = DEFAULT_QUALITY
    size: int = DEFAULT_SIZE  # frame width and height in pixels

    def __post_init__(self) -> None:
        check_quality(self.quality)
        check_size(self.size)
        if self.episodes < 1:
            raise ConfigError(f"the number of video episodes must be >= 1, got {self.episodes}")
        if self.contact_sheet is not None and Path(self.contact_sheet).suffix.lower() != ".png":
            raise ConfigError(f"{self.contact_sheet}: a contact sheet is a PNG file; give a path ending in .png")
        if self.video is not None and self.contact_sheet is not None and \
                Path(self.video).resolve() == Path(self.contact_sheet).resolve():
            raise ConfigError(f"{self.video}: the video and the contact sheet need different files")

    @property
    def wanted(self) -> bool:
        return self.video is not None or self.contact_sheet is not None


def mujoco_sim(env: Any) -> tuple[Any, Any]:
    """(model, data) of a gymnasium MuJoCo env; ConfigError for any other env."""
    sim = env.unwrapped
    model, data = getattr(sim, "model", None), getattr(sim, "data", None)
    if not isinstance(model, mujoco.MjModel) or not isinstance(data, mujoco.MjData):
        name = env.spec.id if env.spec is not None else type(sim).__name__
        raise ConfigError(f"videos and contact sheets are drawn from MuJoCo's simulator; {name} is not a MuJoCo env")
    return model, data


class RobotRenderer:
    """Square RGB frames of an env's robot, drawn from its simulator state with envs.camera's view."""

    def __init__(self, env: Any, size: int = DEFAULT_SIZE, quality: str | RenderQuality = DEFAULT_QUALITY) -> None:
        self.env = env
        self.model, self.data = mujoco_sim(env)
        self.size = check_size(size)
        # A preset's name, or effects of one's own (scripts/bench_video.py times them one by one).
        self.quality = quality if isinstance(quality, RenderQuality) else check_quality(quality)
        # MuJoCo reads these once, when a rendering context is made; restoring them afterwards keeps the
        # env's own renderer exactly as the env made it.
        vis = self.model.vis
        saved = (vis.global_.offwidth, vis.global_.offheight, vis.quality.offsamples, vis.quality.shadowsize)
        vis.global_.offwidth = max(vis.global_.offwidth, self.size)
        vis.global_.offheight = max(vis.global_.offheight, self.size)
        vis.quality.offsamples = self.quality.multisamples
        if self.quality.shadows:  # envs.pixels turns the map off on models it renders observations for
            vis.quality.shadowsize = vis.quality.shadowsize or _SHADOW_MAP
        try:
            self._renderer = mujoco.Renderer(self.model, self.size, self.size)
        finally:
            vis.global_.offwidth, vis.global_.offheight, vis.quality.offsamples, vis.quality.shadowsize = saved
        self._give_back_context()
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = self.quality.shadows
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = self.quality.reflections
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = self.quality.skybox
        spec = getattr(env, "spec", None)
        self.camera, self.camera_description = robot_camera(self.model, self.data, spec.id if spec else None)
        self._floor = FloorUnderRobot(self.model)

    def _update_scene(self) -> None:
        self._renderer.update_scene(self.data, self.camera)
        self._floor.apply(self._renderer.scene, self.data)

    def _give_back_context(self) -> None:
        # gymnasium's offscreen viewer makes its GL context current once, when it is created, and
        # then draws into whatever context is current. Ours became current when it was made and at
        # every frame: hand the env's back, so its next observation frame is drawn where it expects.
        viewer = getattr(getattr(self.env.unwrapped, "mujoco_renderer", None), "viewer", None)
        if viewer is not None and hasattr(viewer, "make_context_current"):
            viewer.make_context_current()

    def render(self) -> np.ndarray:
        """The current frame, (size, size, 3) uint8, a new array."""
        self._update_scene()
        frame = self._renderer.render()
        self._give_back_context()
        return frame

    def segmentation(self) -> np.ndarray:
        """(size, size) geom id shown by each pixel (-1: none or not a geom), from the same camera."""
        self._renderer.enable_segmentation_rendering()
        try:
            self._update_scene()
            ids = self._renderer.render()
        finally:
            self._renderer.disable_segmentation_rendering()
            self._give_back_context()
        return np.where(ids[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), ids[..., 0], -1)

    def close(self) -> None:
        self._renderer.close()
        self._give_back_context()


@dataclass
class EpisodeFrames:
    """The frames of one recorded episode: frame t shows the state after t steps."""

    index: int
    frames: list[np.ndarray]
    returns: np.ndarray | None = None  # (len(frames),) return received before frame t; set when done
    terminated: bool = False


class FrameRecorder:
    """An ``EpisodeRunner.run`` on_step callback: frames of the first ``episodes`` episodes, with one
    renderer per sub-environment. ``finish`` adds an episode's rewards, for contact-sheet captions."""

    def __init__(self, episodes: int = 1, size: int = DEFAULT_SIZE, quality: str = DEFAULT_QUALITY) -> None:
        self.episodes = episodes
        self.size = check_size(size)
        check_quality(quality)
        self.quality = quality
        self.recorded: dict[int, EpisodeFrames] = {}
        self.render_seconds = 0.0
        self.camera_description: str | None = None
        self._renderers: dict[int, RobotRenderer] = {}

    def check(self, env: Any) -> None:
        """ConfigError now, before any episode runs, if frames of ``env`` cannot be drawn."""
        mujoco_sim(env)

    def __call__(self, episode_index: int, env: Any) -> None:
        if episode_index >= self.episodes:
            return
        begin = time.perf_counter()
        renderer = self._renderers.get(id(env))
        if renderer is None:
            renderer = self._renderers[id(env)] = RobotRenderer(env, self.size, self.quality)
            self.camera_description = renderer.camera_description
        self.recorded.setdefault(episode_index, EpisodeFrames(episode_index, [])).frames.append(renderer.render())
        self.render_seconds += time.perf_counter() - begin

    def finish(self, episode_index: int, rewards: np.ndarray, terminated: bool) -> None:
        if episode_index in self.recorded:
            done = self.recorded[episode_index]
            done.returns = np.concatenate([[0.0], np.cumsum(np.asarray(rewards, dtype=np.float64))])
            done.terminated = terminated

    @property
    def num_frames(self) -> int:
        return sum(len(e.frames) for e in self.recorded.values())

    def episodes_in_order(self) -> list[EpisodeFrames]:
        return [self.recorded[i] for i in sorted(self.recorded)]

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers = {}

    def __enter__(self) -> "FrameRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_media(path: Path, suffix: str, what: str, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary file next to ``path`` whose name ends in ``suffix`` (the
    writer picks its format from it), then rename it into place (mtm.io.atomic_write_file). A full
    disk or an unwritable folder is one OutputError line; a temp file a killed write left is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        remove_stale_temps(path)
        atomic_write_file(path, write, suffix=suffix)
    except (OSError, RuntimeError) as exc:
        # ffmpeg runs in its own process: a full disk reaches us as a broken pipe or an ffmpeg
        # error, not always with an errno. Frames that encode are never the problem.
        failure = write_failure(exc, path, what)
        if failure is None:
            failure = OutputError(f"{path}: {what} failed ({short_reason(exc)}); check that its folder has space "
                                  f"and can be written")
        raise failure from None
    return path


# Videos show every step as a frame. MuJoCo tasks step at 20 (HalfCheetah) to 125 (Hopper, Walker2d)
# steps per second; played at that rate a 65-step Hopper episode lasts half a second. Capped at 30,
# the frame rate of ordinary video, faster tasks play in slow motion (Hopper at 0.24x).
MAX_VIDEO_FPS = 30


def video_rate(env_fps: float) -> tuple[int, float]:
    """(frames per second of the mp4, its speed relative to real time) for an env that renders at
    `env_fps` (its metadata's render_fps, one frame per step)."""
    fps = max(1, min(int(round(env_fps)), MAX_VIDEO_FPS))
    return fps, fps / env_fps


def write_video(path: Path, episodes: list[EpisodeFrames], fps: int) -> Path:
    """The frames of ``episodes``, one after another, as an mp4 at ``fps``; written atomically."""
    import imageio.v2 as imageio  # late: imageio loads its plugins; only a run that writes a video pays for it

    def write(tmp: Path) -> None:
        # macro_block_size=1: any frame size (ffmpeg would otherwise resize to a multiple of 16).
        # "veryfast": encoding then costs less than drawing the frames (BENCHMARKS.md, Video rendering).
        with imageio.get_writer(tmp, fps=fps, macro_block_size=1, ffmpeg_params=["-preset", "veryfast"]) as writer:
            for episode in episodes:
                for frame in episode.frames:
                    writer.append_data(frame)

    return write_media(path, ".mp4", "writing the video", write)
