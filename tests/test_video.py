"""Videos and contact sheets: the camera keeps the robot in view, the env's own frames are untouched,
the presets do what they say, and the contact sheet has the tiles and captions it promises."""

from __future__ import annotations

import errno
import gc

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from PIL import Image

from envs import register_envs
from envs.camera import FloorUnderRobot, robot_geoms, robot_root, tracking_camera
from envs.pixels import free_render_contexts
from mtm.contact_sheet import contact_sheet, sample_steps, tile_label
from mtm.errors import ConfigError, MTMWarning, OutputError
from mtm.io import atomic_temp_path, is_atomic_temp
from mtm.rollout import EpisodeRunner, RandomPolicy
from mtm.video import EpisodeFrames, FrameRecorder, RobotRenderer, RolloutMedia, check_quality, write_media

register_envs()

SIZE = 64  # segmentation frames: small is enough to see where the robot is, and fast
# Forward speed of the kinematic drive, m/s: about an expert's pace (D4RL expert returns of about
# 12000 / 3300 / 4600 per 1000 steps), so one episode carries the robot 600 / 28 / 40 m.
FORWARD = {"HalfCheetah-v5": 12.0, "Hopper-v5": 3.5, "Walker2d-v5": 5.0}
FIXED_BASE = ["Reacher-v5", "mtm/ReacherPixels-v0"]
# In view: at least this share of the robot pixels of the first frame, and off the frame's border.
MIN_SHARE = 0.4


def drive(model, data, q0: np.ndarray, t: int, dt: float, speed: float) -> None:
    """Pose at step t of a whole episode's motion: the root slides forward along x at ``speed`` and
    every robot hinge swings 0.5 rad either side of its reset angle, within its range (an unlimited
    hinge turns round), and a robot with a vertical root joint is lifted to keep its lowest point
    above the floor. Kinematic, so no fall ends the episode early and the distance is certain."""
    root = robot_root(model)
    data.qpos[:] = q0
    lift = None
    for j in range(model.njnt):
        if model.body_rootid[model.jnt_bodyid[j]] != root:
            continue  # a prop (Reacher's target) stays where the reset put it
        adr, kind = model.jnt_qposadr[j], model.jnt_type[j]
        if kind == mujoco.mjtJoint.mjJNT_SLIDE and np.allclose(model.jnt_axis[j], (1, 0, 0)):
            data.qpos[adr] = q0[adr] + speed * dt * t
        elif kind == mujoco.mjtJoint.mjJNT_SLIDE and np.allclose(model.jnt_axis[j], (0, 0, 1)):
            lift = adr
        elif kind == mujoco.mjtJoint.mjJNT_HINGE and model.jnt_bodyid[j] != root:
            phase = 2 * np.pi * t / 40 + j
            if model.jnt_limited[j]:
                data.qpos[adr] = np.clip(q0[adr] + 0.5 * np.sin(phase), *model.jnt_range[j])
            else:
                data.qpos[adr] = phase
    mujoco.mj_forward(model, data)
    if lift is not None:
        geoms = robot_geoms(model, root)
        lowest = float(np.min(data.geom_xpos[geoms, 2] - model.geom_rbound[geoms]))
        if lowest < 0:
            data.qpos[lift] -= lowest
            mujoco.mj_forward(model, data)


def in_view(renderer: RobotRenderer, robot: np.ndarray, floor: np.ndarray = np.array([], int)) -> tuple[int, bool, float]:
    """(robot pixels, whether the robot touches the frame's border, share of the frame showing the
    floor) in the renderer's current view."""
    ids = renderer.segmentation()
    mask = np.isin(ids, robot)
    border = mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
    return int(mask.sum()), bool(border), float(np.isin(ids, floor).mean())


def episode_in_view(env_id: str, camera=None, steps: int | None = None) -> dict:
    """Drive ``env_id`` through a whole episode (its time limit) and check the view at every step."""
    env = gym.make(env_id)
    env.reset(seed=0)
    renderer = RobotRenderer(env, SIZE)
    try:
        model, data = renderer.model, renderer.data
        if camera is not None:
            renderer.camera = camera(env)
        robot = np.flatnonzero(robot_geoms(model))
        floor = np.array([model.geom(name).id for name in ("floor",) if name in _geom_names(model)], int)
        q0 = data.qpos.copy()
        steps = steps or env.spec.max_episode_steps
        pixels, border, floor_share = [], [], []
        for t in range(steps + 1):  # the reset frame and one per step
            drive(model, data, q0, t, env.unwrapped.dt, FORWARD.get(env_id, 0.0))
            n, b, f = in_view(renderer, robot, floor)
            pixels.append(n)
            border.append(b)
            floor_share.append(f)
        root_x = float(data.subtree_com[robot_root(model)][0])
        pixels = np.array(pixels)
        ok = (pixels >= MIN_SHARE * pixels[0]) & ~np.array(border)
        return {"frames": len(pixels), "pixels": pixels, "ok": ok, "root_x": root_x, "dt": env.unwrapped.dt,
                "floor": np.array(floor_share), "camera": renderer.camera_description}
    finally:
        renderer.close()
        env.close()


def _geom_names(model) -> set[str]:
    return {model.geom(g).name for g in range(model.ngeom)}


@pytest.mark.parametrize("env_id", [*FORWARD, *FIXED_BASE])
def test_the_robot_stays_in_view_for_a_whole_episode(env_id):
    seen = episode_in_view(env_id)
    assert seen["frames"] == gym.spec(env_id).max_episode_steps + 1
    if env_id in FORWARD:  # an expert's distance, many frame widths away from the start
        assert seen["root_x"] > 0.9 * FORWARD[env_id] * seen["dt"] * (seen["frames"] - 1)
        assert seen["camera"] == "the model's camera 'track' (trackcom)"
    else:
        assert seen["camera"].startswith("the task's own view")
    bad = np.flatnonzero(~seen["ok"])
    assert bad.size == 0, f"robot out of view at steps {bad[:10]} (pixels {seen['pixels'][bad[:10]]} of {seen['pixels'][0]})"
    assert seen["pixels"].min() > 0.01 * SIZE * SIZE  # and never a speck
    if env_id in FORWARD:  # and running over the floor, hundreds of metres past the plane's edge
        assert seen["floor"].min() > 0.25, f"floor share fell to {seen['floor'].min():.2f}"


@pytest.mark.parametrize("env_id", list(FORWARD))
def test_the_free_tracking_camera_follows_too(env_id):
    # Rule 3 (models without a tracking camera of their own), tried on the locomotion models.
    seen = episode_in_view(env_id, camera=lambda env: tracking_camera(env.unwrapped.model, env.unwrapped.data))
    assert seen["ok"].all(), f"out of view at steps {np.flatnonzero(~seen['ok'])[:10]}"


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5"])
def test_the_floor_moves_with_the_robot_by_whole_texture_periods(env_id):
    # The checkerboard stays put in the world: a robot one texture period further on (at any
    # distance) is seen exactly as at the start, half a period further on it is not.
    env = gym.make(env_id)
    env.reset(seed=0)
    renderer = RobotRenderer(env, 96)
    try:
        model, data = renderer.model, renderer.data
        (floor, period), = FloorUnderRobot(model).periods.items()
        assert model.geom(floor).name == "floor" and period[0] == pytest.approx(2 * model.geom_size[floor][0] / 60)
        q0 = data.qpos.copy()

        def frame_at(dx: float) -> np.ndarray:
            data.qpos[:] = q0
            data.qpos[0] += dx
            mujoco.mj_forward(model, data)
            return renderer.render().astype(int)

        start = frame_at(0.0)
        far = round(10 * model.geom_size[floor][0] / period[0]) * period[0]  # 10 half-sizes: 200-400 m on
        assert np.abs(frame_at(far) - start).mean() < 1.0
        assert np.abs(frame_at(far + period[0] / 2) - start).mean() > 20
    finally:
        renderer.close()
        env.close()


def gymnasium_default_camera(env) -> mujoco.MjvCamera:
    """The camera gymnasium's rgb_array render() used: what mtm's videos showed before."""
    sim = env.unwrapped
    sim.render_mode = "rgb_array"
    sim.render()
    old = sim.mujoco_renderer.viewer.cam
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE  # render() forces the free camera (camera_id -1)
    camera.lookat[:] = old.lookat
    camera.distance, camera.azimuth, camera.elevation = old.distance, old.azimuth, old.elevation
    free_render_contexts(sim)  # before close: see envs.pixels.free_render_contexts
    return camera


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5"])
def test_the_check_fails_for_the_old_fixed_view(env_id):
    # The same check, with the view mtm used before: the robot runs out of it within the episode.
    seen = episode_in_view(env_id, camera=gymnasium_default_camera, steps=300)
    first_out = int(np.argmin(seen["ok"]))
    assert not seen["ok"].all() and first_out < 300
    assert seen["pixels"][-1] == 0  # gone entirely: the frames show only the floor


def test_pixel_observations_do_not_change_when_a_video_is_recorded():
    # A video renderer is another GL context in the process. The env's own renderer (pixel
    # observations) must draw exactly the same frames with it, in this evaluation and the next,
    # also when the closed envs of the one before are collected while the next one is drawing.
    closed_envs: list = []

    def observations(record: bool) -> list[np.ndarray]:
        # "nice": a multisampled buffer with shadows, unlike the observation's, so a frame drawn in
        # the wrong context would differ.
        recorder = FrameRecorder(episodes=2, size=96, quality="nice") if record else None

        def on_step(episode_index, env):
            if recorder is not None:
                recorder(episode_index, env)
            if closed_envs:  # the garbage collector runs mid-evaluation, a GL context current
                closed_envs.clear()
                gc.collect()

        with EpisodeRunner("mtm/ReacherPixels-v0", 2) as runner:
            policy = RandomPolicy(runner.action_space, seed=3)
            episodes = [ep for _, ep in runner.run(policy, 3, seed=5, on_step=on_step)]
            if recorder is not None:
                assert recorder.num_frames == 2 * 51
                recorder.close()
            closed_envs.extend(runner.envs)
        return [ep.observations["pixels"] for ep in episodes]

    reference = observations(record=False)
    for _ in range(2):  # twice: a closed evaluation must not spoil the next one
        for a, b in zip(reference, observations(record=True)):
            np.testing.assert_array_equal(a, b)


def test_quality_presets():
    env = gym.make("HalfCheetah-v5")
    env.reset(seed=0)
    fast, nice = RobotRenderer(env, SIZE, "fast"), RobotRenderer(env, SIZE, "nice")
    try:
        flags = {name: (fast._renderer.scene.flags[f], nice._renderer.scene.flags[f])
                 for name, f in [("shadow", mujoco.mjtRndFlag.mjRND_SHADOW),
                                 ("reflection", mujoco.mjtRndFlag.mjRND_REFLECTION)]}
        assert flags == {"shadow": (0, 1), "reflection": (0, 1)}
        a, b = fast.render(), nice.render()
        assert a.shape == b.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b).mean() > 1  # shadows and reflections show
        # The env's model is as the env made it: the settings applied only while the renderer was made.
        assert env.unwrapped.model.vis.quality.offsamples == 4
    finally:
        fast.close()
        nice.close()
        env.close()
    with pytest.raises(ConfigError, match="one of fast, nice"):
        check_quality("pretty")


@pytest.mark.parametrize("kwargs,message", [
    ({"quality": "ultra"}, "video quality must be one of fast, nice"),
    ({"size": 8}, "between 16 and"),
    ({"episodes": 0}, "episodes must be >= 1"),
    ({"contact_sheet": "sheet.jpg"}, "ending in .png"),
    ({"video": "same.png", "contact_sheet": "same.png"}, "different files"),
])
def test_bad_media_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RolloutMedia(**kwargs)


def test_videos_need_a_mujoco_env():
    env = gym.make("CartPole-v1")
    with pytest.raises(ConfigError, match="not a MuJoCo env"):
        FrameRecorder().check(env)
    env.close()


def test_sample_steps():
    assert sample_steps(1001, 8) == [0, 143, 286, 429, 571, 714, 857, 1000]
    assert sample_steps(5, 8) == [0, 1, 2, 3, 4]
    assert sample_steps(9, 8)[0] == 0 and sample_steps(9, 8)[-1] == 8 and len(set(sample_steps(9, 8))) == 8


def _episode(index: int, length: int, colour: int, terminated: bool = False) -> EpisodeFrames:
    frames = [np.full((SIZE, SIZE, 3), colour, np.uint8) for _ in range(length + 1)]
    episode = EpisodeFrames(index, frames)
    episode.returns = np.concatenate([[0.0], np.cumsum(np.full(length, 0.5))])
    episode.terminated = terminated
    return episode


def test_contact_sheet_layout_and_captions():
    long, short = _episode(0, 50, 200), _episode(1, 4, 100, terminated=True)
    sheet = np.asarray(contact_sheet([long, short]))
    # 8 tiles of the long episode (2 rows of 4), 5 of the short one (2 rows: a new episode starts a row).
    gap = 2
    assert sheet.shape == (4 * SIZE + 3 * gap, 4 * SIZE + 3 * gap, 3)
    tiles = [(r, c) for r in range(4) for c in range(4)]
    shown = {(r, c): sheet[r * (SIZE + gap) + SIZE // 2:(r + 1) * (SIZE + gap) - gap, c * (SIZE + gap):c * (SIZE + gap) + SIZE]
             for r, c in tiles}
    colour = {k: int(np.median(v)) for k, v in shown.items()}
    assert [colour[(r, c)] for r in (0, 1) for c in range(4)] == [200] * 8  # the long episode's tiles
    assert [colour[(2, c)] for c in range(4)] + [colour[(3, 0)]] == [100] * 5  # then the short one's
    assert [colour[(3, c)] for c in (1, 2, 3)] == [32] * 3  # empty slots show the background
    # Each tile has a caption band at its top: darker than the frame, with light text in it.
    band = sheet[:12, :SIZE]
    assert band.min() < 100 and band.max() > 220
    assert tile_label(long, 50) == "ep 0  step 50  return 25.0"
    assert tile_label(short, 4) == "ep 1  step 4  return 2.0  (end)"
    with pytest.raises(ValueError, match="no frames"):
        contact_sheet([EpisodeFrames(0, [])])


def test_write_media_is_atomic_and_cleans_up_after_a_killed_write(tmp_path):
    out = tmp_path / "sheet.png"
    stale = atomic_temp_path(out, ".png")
    stale.write_bytes(b"half a sheet from a killed run")
    names = []

    def write(tmp):
        names.append(tmp.name)
        Image.new("RGB", (4, 4)).save(tmp)  # PIL, like imageio, picks the format from the suffix

    with pytest.warns(MTMWarning, match="removed, left behind by an interrupted run"):
        write_media(out, ".png", "writing the sheet", write)
    assert names[0].endswith(".tmp.png") and is_atomic_temp(names[0], of="sheet.png")
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]

    def full_disk(tmp):
        tmp.write_bytes(b"a few bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match="sheet.png: writing the sheet failed: no space left on device"):
        write_media(out, ".png", "writing the sheet", full_disk)
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # the old file, no temp file
    with Image.open(out) as picture:
        assert picture.size == (4, 4)


@pytest.mark.shared_data
@pytest.mark.parametrize("name,env_id", [("halfcheetah-expert-v5", "HalfCheetah-v5"), ("hopper-expert-v5", "Hopper-v5")])
def test_a_recorded_expert_episode_stays_in_view(shared_datasets, name, env_id):
    # Real expert motion: the first episode of the shared SAC-expert data, replayed from its recorded
    # MuJoCo states (infos/qpos, which include the root's x position).
    import h5py

    with h5py.File(shared_datasets / f"{name}.hdf5") as f:
        ends = np.flatnonzero(f["terminals"][:2000] | f["timeouts"][:2000])
        qpos, qvel = f["infos/qpos"][: ends[0] + 1], f["infos/qvel"][: ends[0] + 1]
    env = gym.make(env_id)
    env.reset(seed=0)
    renderer = RobotRenderer(env, SIZE)
    try:
        model, data = renderer.model, renderer.data
        robot = np.flatnonzero(robot_geoms(model))
        floor = np.array([model.geom("floor").id])
        seen = []
        for q, v in zip(qpos, qvel):
            data.qpos[:], data.qvel[:] = q, v
            mujoco.mj_forward(model, data)
            seen.append(in_view(renderer, robot, floor))
    finally:
        renderer.close()
        env.close()
    pixels = np.array([n for n, _, _ in seen])
    assert qpos[-1, 0] - qpos[0, 0] > 5.0  # it went somewhere: metres, many frame widths
    assert not any(b for _, b, _ in seen) and (pixels >= MIN_SHARE * pixels[0]).all()
    assert min(f for _, _, f in seen) > 0.25  # over the floor all the way
