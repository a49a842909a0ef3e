"""The tasks mtm knows by name: what they are, whether a scripted expert exists, how to collect data.

Any gymnasium id works with ``mtm collect --policy random`` and with evaluation; TASKS adds what mtm
knows beyond the registry: a scripted expert, a default dataset recipe, reference scores, pixel and
video views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gymnasium as gym

from envs.experts import Expert, PusherExpert, ReacherExpert
from envs.pixel_pusher import TOP_CAMERA as PUSHER_TOP_CAMERA, object_at_goal, pusher_expert_input
from envs.pixel_reacher import TOP_DOWN_CAMERA, reacher_observation
from envs.pixels import Camera, PixelObservation
from envs.references import reference_scores


@dataclass(frozen=True)
class CollectRecipe:
    """One `mtm collect` run that produces a task's default dataset."""

    policy: str
    episodes: int
    output: str
    # Expert action-noise std per block of episodes: several values split the episodes into equal
    # consecutive blocks, which gives one file of mixed quality (returns from expert to poor).
    noise: tuple[float, ...] = ()
    seed: int = 0
    num_envs: int = 8

    def command(self, env_id: str) -> str:
        noise = " --noise " + ",".join(f"{n:g}" for n in self.noise) if self.noise else ""
        return (f"mtm collect --env {env_id} --policy {self.policy} --episodes {self.episodes} "
                f"--num-envs {self.num_envs} --seed {self.seed}{noise} --output {self.output}")


@dataclass(frozen=True)
class TaskSpec:
    env_id: str
    description: str
    max_episode_steps: int
    expert: Callable[[], Expert] | None = None  # factory: a fresh scripted expert, or None
    recipe: CollectRecipe | None = None
    # Default camera of make_pixel_env (below): a camera id / name, or free-camera settings.
    pixel_camera: int | str | dict[str, Any] | None = None
    # The view of videos and contact sheets, as free-camera settings (envs.camera.free_camera); None:
    # the model's own tracking camera, else a camera that tracks the robot (envs.camera.robot_camera).
    video_camera: dict[str, Any] | None = None
    # Privileged expert input, for tasks whose observation hides what the expert needs: a function
    # of one (sub-)environment returning the expert's input row, read from the simulator. None: the
    # expert acts from the observation ("state" of a dict observation).
    expert_observation: Callable[[Any], Any] | None = None
    # Whether one (sub-)environment's task is solved in its current state (read after an episode's
    # last step for success rates), for tasks that define success; None: return only.
    success: Callable[[Any], bool] | None = None

    @property
    def references(self) -> tuple[float, float] | None:
        """(random, expert) reference returns for normalised scores, or None when unmeasured."""
        return reference_scores(self.env_id)


TASKS: dict[str, TaskSpec] = {
    spec.env_id: spec
    for spec in [
        TaskSpec(
            env_id="Reacher-v5",
            description=("MuJoCo 2-link arm reaching a random target in the plane; 10-D state, 2-D torque, "
                         "50-step episodes. Fast to simulate: mtm's default demo task."),
            max_episode_steps=50,
            expert=ReacherExpert,
            # Noise 0 / 0.1 / 0.3 / 0.5 gives mean returns of about -3.6 / -5 / -15 / -30 (random
            # is -43), so return-conditioned models see both what to do and what not to do.
            recipe=CollectRecipe(policy="expert", episodes=2000, noise=(0.0, 0.1, 0.3, 0.5),
                                 output="datasets/reacher-v5-mixed.hdf5"),
            pixel_camera=TOP_DOWN_CAMERA,  # the whole arm spans ~27 px of a 64 px frame
            # The arm is fixed to the table and the target must be in the picture: the same view.
            video_camera=TOP_DOWN_CAMERA,
        ),
        TaskSpec(
            env_id="mtm/ReacherPixels-v0",
            description=("Reacher-v5 whose state (6-D: joint angles and velocities) hides the target, which "
                         "only the 64x64 top-down frame shows; dict observation {state, pixels}. Tests that a "
                         "model uses its image tokens."),
            max_episode_steps=50,
            # The Reacher expert, fed the full Reacher-v5 observation rebuilt from the simulator.
            expert=ReacherExpert,
            expert_observation=reacher_observation,
            # Expert plus a mildly noisy expert: the expert's actions are small (variance ~0.01),
            # so action noise of 0.3 would drown the target-dependent part a model must learn
            # from the frames (BENCHMARKS.md, Images).
            recipe=CollectRecipe(policy="expert", episodes=3000, noise=(0.0, 0.1),
                                 output="datasets/reacher-pixels-v0-clean.hdf5"),
            video_camera=TOP_DOWN_CAMERA,
        ),
        TaskSpec(
            env_id="mtm/PusherPixels-v0",
            description=("Pusher-v5 whose state (17-D: joint angles, velocities, fingertip) hides the object, which "
                         "only the 64x64 frame from above shows; reward -|object - goal|, 100-step episodes, "
                         "info['is_success'] within 5 cm. Dict observation {state, pixels}."),
            max_episode_steps=100,
            # Resolved-rate control of the hand's fork, fed the object's position from the simulator.
            expert=PusherExpert,
            expert_observation=pusher_expert_input,
            success=object_at_goal,
            # Expert plus a mildly noisy expert (noise 0.1: 96 % success; 0.3 drops it to 60 %, 0.5 to
            # 34 %, BENCHMARKS.md): expert-quality pushes from a wider spread of states.
            recipe=CollectRecipe(policy="expert", episodes=2000, noise=(0.0, 0.1),
                                 output="datasets/pusher-pixels-v0.hdf5"),
            video_camera=PUSHER_TOP_CAMERA,
        ),
        TaskSpec(
            env_id="mtm/PusherPixels2Cam-v0",
            description=("mtm/PusherPixels-v0 seen by two cameras: {state, pixels (from above), pixels_side "
                         "(from beyond the table's far end)}."),
            max_episode_steps=100,
            expert=PusherExpert,
            expert_observation=pusher_expert_input,
            success=object_at_goal,
            recipe=CollectRecipe(policy="expert", episodes=2000, noise=(0.0, 0.1),
                                 output="datasets/pusher-pixels-2cam-v0.hdf5"),
            video_camera=PUSHER_TOP_CAMERA,
        ),
    ]
}


def envs_with_expert() -> list[str]:
    return sorted(env_id for env_id, spec in TASKS.items() if spec.expert is not None)


def make_pixel_env(env_id: str, size: int = 64, camera: Camera = None, **kwargs: Any) -> PixelObservation:
    """``gym.make`` with rgb_array rendering, wrapped in PixelObservation (``size`` x ``size`` frames).
    Without a ``camera``, a task of TASKS is seen from its ``pixel_camera`` (Reacher's stock view
    leaves the arm a few pixels wide)."""
    if camera is None and env_id in TASKS:
        camera = TASKS[env_id].pixel_camera
    # No width/height here: PixelObservation sizes the renderer itself, and non-MuJoCo envs would
    # reject the keywords with a TypeError instead of the wrapper's clear message.
    env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    try:
        return PixelObservation(env, size=size, camera=camera)
    except BaseException:
        env.close()
        raise
