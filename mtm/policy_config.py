"""How a trained model acts as a policy: one definition of the policy's settings for `mtm eval`,
evaluation during training (`train.eval_policy`) and Python code (`MTMPolicy(..., mode="rcbc")`),
and the names of what a model can be asked to do (policy modes, prediction tasks).

Imports nothing heavy, so the command line can build it without loading torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from mtm.hardware import PrecisionName

PolicyMode = Literal["auto", "bc", "rcbc", "plan", "id"]
#: The modes a policy can act in; "auto" picks rcbc when the model can do it, else bc. plan: RCBC
#: proposals, scored by the critic's Q, by predicted rewards or by the value (mtm.planning). id: the
#: next state predicted from the history (the bc view), then the action by inverse dynamics from the
#: current state and that one; for data with few actions beside many state-only episodes, whose
#: next states the model learns from every episode.
POLICY_MODES: tuple[str, ...] = tuple(m for m in get_args(PolicyMode) if m != "auto")
#: The prediction tasks validation and `mtm eval --task` score (mtm.evaluation.predictions defines
#: each one; tests/test_policy_config.py checks that it defines exactly these).
PREDICTION_TASK_NAMES: tuple[str, ...] = ("bc", "rcbc", "fd", "id")


@dataclass
class PolicyConfig:
    mode: PolicyMode = "auto"  # which tokens the policy shows the model; auto = rcbc when the model can, else bc
    target_return: float | None = None  # rcbc: the episode return to ask for
    target_fraction: float | None = None  # rcbc: ask for min + p (max - min) of the training episode returns (1.0 = the best seen); neither given = the best training return that is not an outlier (above Q3 + 1.5 IQR), the best itself on most data
    decrement: bool = False  # rcbc: lower the target by the rewards received (Decision Transformer), or hold it constant (official MTM)
    action_history: bool = False  # show the model the actions taken at the window's earlier steps, or only states (and returns). Off by default: on the `small` recipe's checkpoints the history makes a policy imitate the behaviour its own past actions resemble rather than the return it is asked for (a hopper medium + expert mixture, RCBC 83.6 -> 95.4, plan 90.7 -> 95.9), and plan without it is at or above plan with it on the six shared datasets (BENCHMARKS.md, "Action history")
    precision: PrecisionName = "auto"  # bf16 autocast only where the device multiplies bf16 natively (mtm.hardware)
    plan_candidates: int = 64  # plan: candidate action sequences per env and step (the first is the RCBC action itself)
    plan_horizon: int = 1  # plan: steps each candidate is imagined for (1: the first action's value only; 2 helped on hopper-medium-replay, hurt on halfcheetah-medium-replay: BENCHMARKS.md)
    plan_temperature: float | None = None  # plan: softmax temperature over the candidates' scores, in return-token stds (small: near the best); None: 0.02 scored by q (the candidates' Q differ by ~0.2 stds), else 0.05 (their values differ by 1e-3 .. 1e-2)
    plan_relative_temperature: float | None = 1.0  # plan: a floor on the softmax's temperature, in units of the std of the K candidates' scores at that step: the softmax is never sharper than this, whatever the return token's spread (halfcheetah-expert-v5's is a tenth of the medium files', so plan_temperature alone followed Q there ten times as greedily: 85.4 against RCBC's 97.2, 97.1 with this floor; BENCHMARKS.md, "The temperature's unit"); None: plan_temperature alone
    plan_noise: float = 0.3  # plan: std of the candidates' action noise, in units of the data's action std
    plan_max_gain: float | None = 0.2  # plan: where the best candidate scores more than this many return-token stds above the RCBC action, the step from the RCBC action towards the softmax mean is cut to max_gain / that margin of it (a critic that promises a large gain for a small change of action is extrapolating: halfcheetah-expert-v5 61.7 -> 92.1, the medium files' margins are 0.05-0.08 and unchanged); None: no cap
    plan_seed: int = 0  # plan: seed of the candidates' noise, with each episode's index (mtm eval's episode i draws the same noise in any number of envs)
    plan_score: Literal["auto", "q", "value", "rewards"] = "auto"  # plan: "q": the critic's Q of the (state, action)s, the mean over the H imagined steps (needs model.critic); "value": the mean of the values of the imagined (state, action)s; "rewards": the predicted rewards of the H imagined steps, discounted, plus the discounted value of the state after them (M3PC; needs model.reward_head); auto: q where the model has a critic, else rewards where it has a reward head, else value
    plan_discount: float = 0.99  # plan, score rewards: gamma of the imagined rewards and the final value
    cuda_graph: bool = False  # CUDA: replay act()'s network call from a captured CUDA graph while every env slot acts (mtm.cuda_graph); off until measured on a GPU (scripts/gpu_checks.sh)

    def __post_init__(self) -> None:
        # ValueError "field ...": the config loader's convention (mtm.config), reported with the section.
        if self.target_return is not None and self.target_fraction is not None:
            raise ValueError("target_return and target_fraction: give one of them, not both")
        if self.plan_candidates < 1:
            raise ValueError(f"plan_candidates must be >= 1, got {self.plan_candidates}")
        if self.plan_horizon < 1:
            raise ValueError(f"plan_horizon must be >= 1, got {self.plan_horizon}")
        if self.plan_temperature is not None and not self.plan_temperature > 0:
            raise ValueError(f"plan_temperature must be > 0, got {self.plan_temperature}")
        if self.plan_relative_temperature is not None and not self.plan_relative_temperature > 0:
            raise ValueError(f"plan_relative_temperature must be > 0, got {self.plan_relative_temperature}")
        if self.plan_max_gain is not None and not self.plan_max_gain > 0:
            raise ValueError(f"plan_max_gain must be > 0, got {self.plan_max_gain}")
        if not self.plan_noise >= 0:
            raise ValueError(f"plan_noise must be >= 0, got {self.plan_noise}")
        if self.plan_score not in ("auto", "q", "value", "rewards"):
            raise ValueError(f"plan_score must be auto, q, value or rewards, got {self.plan_score!r}")
        if not 0.0 < self.plan_discount < 1.0:
            raise ValueError(f"plan_discount must be in (0, 1), got {self.plan_discount}")

    def replace(self, **settings: Any) -> "PolicyConfig":
        """A copy with some settings changed (None values are left out: 'not given')."""
        return dataclasses.replace(self, **{k: v for k, v in settings.items() if v is not None})
