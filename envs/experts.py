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
