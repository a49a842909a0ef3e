"""Scripted experts: near-optimal controllers that act from the observation alone.

An expert is a callable mapping a batch of observations (B, obs_dim) to a batch of actions
(B, act_dim), vectorised with numpy so that one call serves every sub-environment of a rollout.
Experts are deterministic; exploration noise for mixed-quality data is added by the caller
(``mtm.rollout.ExpertPolicy``) so that its random stream can be seeded per episode.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Expert = Callable[[np.ndarray], np.ndarray]

# Reacher geometry from gymnasium's reacher.xml: body1 sits 0.1 along link0 and the fingertip body
# 0.11 along link1 (the capsule geom is 0.1 long, the fingertip sphere sits 0.01 beyond it).
# tests/test_envs.py checks both numbers against the compiled MuJoCo model and its forward kinematics.
REACHER_LINK_LENGTHS = (0.1, 0.11)
# joint1 (the elbow) is limited to +-3.0 rad in the XML; a target that needs more is clipped to it.
REACHER_ELBOW_LIMIT = 3.0


def _wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Map angles to [-pi, pi): joint0 is unlimited, so the error to a target angle is modular."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


class ReacherExpert:
    """Analytic inverse kinematics for the 2-link arm, then PD control on the joint angles.

    Reacher-v5 observation (10-D): cos(q0), cos(q1), sin(q0), sin(q1), target x, target y,
    dq0, dq1, fingertip - target (x, y). Actions are joint torques in [-1, 1] (gear 200).

    The reward is -|fingertip - target| - |action|^2 per step, so the gains trade reaching speed
    against the quadratic control cost. They were tuned on seeds 0..99 (a grid over kp, kd, per-joint
    gains and non-linear error shaping; the plain PD below was within 0.05 of the best of those).
    """

    def __init__(self, kp: float = 0.3, kd: float = 0.05, link_lengths: tuple[float, float] = REACHER_LINK_LENGTHS,
                 elbow_limit: float = REACHER_ELBOW_LIMIT) -> None:
        self.kp = kp
        self.kd = kd
        self.l1, self.l2 = link_lengths
        self.elbow_limit = elbow_limit

    def joint_errors(self, obs: np.ndarray) -> np.ndarray:
        """(B, 2) joint-angle errors to the inverse-kinematics solution nearest the current pose."""
        obs = np.asarray(obs, dtype=np.float64)
        q = np.arctan2(obs[:, 2:4], obs[:, 0:2])
        target = obs[:, 4:6]
        l1, l2 = self.l1, self.l2
        # Law of cosines; clipping handles targets outside the reachable annulus (the arm then
        # points straight at them, or folds as far as it can).
        cos_elbow = np.clip((np.sum(target**2, axis=1) - l1**2 - l2**2) / (2.0 * l1 * l2), -1.0, 1.0)
        bearing = np.arctan2(target[:, 1], target[:, 0])
        candidates = []
        # Two mirror solutions (elbow bent one way or the other). Taking the one nearer in joint
        # space beats always keeping the elbow's current side by ~0.4 return: it avoids long swings.
        for elbow in (np.arccos(cos_elbow), -np.arccos(cos_elbow)):
            elbow = np.clip(elbow, -self.elbow_limit, self.elbow_limit)
            shoulder = bearing - np.arctan2(l2 * np.sin(elbow), l1 + l2 * np.cos(elbow))
            # joint0 is unlimited, so its error is modular; the elbow is limited to +-3 rad and
            # must travel the plain difference.
            candidates.append(np.stack([_wrap_angle(shoulder - q[:, 0]), elbow - q[:, 1]], axis=1))
        first, second = candidates
        take_first = np.abs(first).sum(axis=1) <= np.abs(second).sum(axis=1)
        return np.where(take_first[:, None], first, second)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        torque = self.kp * self.joint_errors(obs) - self.kd * obs[:, 6:8]
        return np.clip(torque, -1.0, 1.0).astype(np.float32)


# PusherExpert's input row, read from the simulator by envs.pixel_pusher.pusher_expert_input: the
# layout below, (B, PUSHER_INPUT_DIM). "cup": the point inside the hand's fork where the object sits
# against the cross bar; R: the hand's rotation (world from hand, row-major); J: the cup's
# translational and the hand's rotational Jacobians over the 7 arm joints (row-major 3 x 7 each).
PUSHER_INPUT_LAYOUT = (("cup", 3), ("hand_rotation", 9), ("object", 3), ("goal", 3), ("qpos", 7), ("qvel", 7),
                       ("jac_cup", 21), ("jac_rot", 21))
PUSHER_INPUT_DIM = sum(n for _, n in PUSHER_INPUT_LAYOUT)
# Viscous damping of the 7 arm joints in gymnasium's pusher_v5.xml: the torque that holds a joint
# velocity (there is no gravity), fed forward so the velocity loop's own gain can stay small.
PUSHER_JOINT_DAMPING = (1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.1)
PUSHER_SHOULDER_XY = (0.0, -0.6)  # the shoulder pan axis in the table plane


def split_pusher_input(rows: np.ndarray) -> dict[str, np.ndarray]:
    """(B, PUSHER_INPUT_DIM) -> {name: (B, n)} following PUSHER_INPUT_LAYOUT."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != PUSHER_INPUT_DIM:
        raise ValueError(f"PusherExpert reads (B, {PUSHER_INPUT_DIM}) rows from the simulator, got {rows.shape}")
    parts, start = {}, 0
    for name, n in PUSHER_INPUT_LAYOUT:
        parts[name] = rows[:, start:start + n]
        start += n
    return parts


class PusherExpert:
    """Resolved-rate control of the hand's fork: take the object into the fork, carry it to the goal.

    The hand of gymnasium's Pusher arm is a fork (a cross bar and two prongs). The expert moves the
    "cup" (the point where the object touches the cross bar) and keeps the fork level, heading along
    ``h``, a blend of the push direction (object -> goal) and the arm's radial direction (the
    heading the arm reaches easily; near the goal, where the push direction turns with every
    millimetre, only the radial one):

    1. approach: the cup goes to a point just behind the object along ``h``, high above the table
       while far from it, descending as it arrives (so the hand does not sweep the object away);
    2. push: with the object inside the fork, the cup moves by the object's remaining error to the
       goal, slowing down as it gets there (the object coasts when the hand stops).

    The Cartesian command is turned into joint velocities by a damped least-squares inverse of the
    stacked [position; weighted orientation] Jacobian, with a posture term in its null space (roll
    joints at zero, elbow and wrist flexed the way the arm reaches the table), and those into
    torques by feeding the joint damping forward plus a small velocity feedback (a stiff velocity
    loop oscillates on the light roll joints at the 20 Hz control rate).

    Stateless: every decision is made from the current row, so one instance serves all episodes.
    Tuned on seeds 0..49 of mtm/PusherPixels-v0 (BENCHMARKS.md).
    """

    def __init__(self, behind: float = 0.02, push_height: float = -0.275, travel_height: float = -0.08,
                 approach_gain: float = 5.0, push_gain: float = 3.0, push_speed: float = 0.5,
                 radial_weight: float = 0.5, heading_blend: float = 0.1) -> None:
        self.behind = behind  # the cup lands this far behind the object's centre
        self.push_height = push_height  # the object's centre height (cylinder on the table)
        self.travel_height = travel_height  # clear of the object, prongs included
        self.approach_gain = approach_gain
        self.push_gain = push_gain
        self.push_speed = push_speed  # m/s
        self.radial_weight = radial_weight
        self.heading_blend = heading_blend  # m: within this of the goal the push direction fades out
        # Orientation task weights: keep the fork level (tilt) firmly, its heading (yaw) loosely,
        # since near the shoulder the arm cannot turn the hand far.
        self.orientation_weights = np.array([0.3, 0.3, 0.1])
        self.orientation_gain = 3.0
        self.damping = 0.01  # of the least-squares inverse, through the arm's singular poses
        self.posture = np.array([0.0, 0.0, 0.0, -1.4, 0.0, -0.4, 0.0])
        self.posture_gain = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
        self.velocity_gain = 0.5
        self.joint_damping = np.asarray(PUSHER_JOINT_DAMPING)

    def cup_target(self, cup: np.ndarray, obj: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """(the cup's target position (3,), the fork heading (2,), pushing?) for one row."""
        to_goal = goal[:2] - obj[:2]
        distance = float(np.linalg.norm(to_goal))
        push_dir = to_goal / max(distance, 1e-9)
        radial = obj[:2] - np.asarray(PUSHER_SHOULDER_XY)
        radial /= max(float(np.linalg.norm(radial)), 1e-9)
        heading = push_dir * min(1.0, distance / self.heading_blend) + self.radial_weight * radial
        heading /= max(float(np.linalg.norm(heading)), 1e-9)
        across = np.array([-heading[1], heading[0]])
        offset = obj[:2] - cup[:2]  # the object seen from the cup, in the fork's frame
        ahead, aside = float(offset @ heading), float(offset @ across)
        # Inside the fork: between the prongs (inner gap 0.16 m, object radius 0.05 m), in front of
        # the cross bar, and down at the object's height.
        inside = -0.02 < ahead < 0.12 and abs(aside) < 0.06 and cup[2] < self.push_height + 0.03
        if inside:
            return np.r_[cup[:2] + to_goal, self.push_height], heading, True
        landing = obj[:2] - heading * self.behind
        miss = float(np.linalg.norm(cup[:2] - landing))
        # Descend over the last few centimetres only: a funnel from travel height to push height.
        lift = np.clip((miss - 0.015) / 0.04, 0.0, 1.0)
        return np.r_[landing, self.push_height + lift * (self.travel_height - self.push_height)], heading, False

    def act_one(self, row: dict[str, np.ndarray]) -> np.ndarray:
        cup, obj, goal = row["cup"], row["object"], row["goal"]
        target, heading, pushing = self.cup_target(cup, obj, goal)
        velocity = (self.push_gain if pushing else self.approach_gain) * (target - cup)
        if pushing:
            speed = float(np.linalg.norm(velocity))
            velocity *= min(1.0, self.push_speed / max(speed, 1e-9))
        rotation = row["hand_rotation"].reshape(3, 3)
        x_goal = np.r_[heading, 0.0]
        z_goal = np.array([0.0, 0.0, 1.0])
        if rotation[:, 2] @ z_goal < 0:  # the fork is symmetric: either face up will do
            z_goal = -z_goal
        desired = np.stack([x_goal, np.cross(z_goal, x_goal), z_goal], axis=1)
        # Rotation error as an angular velocity (half the sum of axis cross products).
        angular = 0.5 * sum(np.cross(rotation[:, i], desired[:, i]) for i in range(3))
        w = self.orientation_weights
        jac = np.vstack([row["jac_cup"].reshape(3, 7), w[:, None] * row["jac_rot"].reshape(3, 7)])
        task = np.r_[velocity, w * self.orientation_gain * angular]
        pinv = jac.T @ np.linalg.inv(jac @ jac.T + self.damping * np.eye(6))
        dq = pinv @ task
        dq += (np.eye(7) - pinv @ jac) @ (self.posture_gain * (self.posture - row["qpos"]))
        torque = self.joint_damping * dq + self.velocity_gain * (dq - row["qvel"])
        return np.clip(torque, -2.0, 2.0)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        parts = split_pusher_input(rows)
        actions = [self.act_one({k: v[i] for k, v in parts.items()}) for i in range(len(rows))]
        return np.asarray(actions, dtype=np.float32).reshape(len(rows), 7)
