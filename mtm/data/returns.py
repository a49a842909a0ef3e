"""Return-to-go: the quantity MTM's "returns" token carries.

Three kinds (``RTG_KINDS``), for an episode with rewards r_0 … r_{T-1}:

- ``sum``:         R_t = Σ_{k≥t} r_k                          (Decision Transformer)
- ``discounted``:  R_t = Σ_{k≥t} γ^{k−t} r_k
- ``average``:     R_t = Σ_{k≥t} r_k / max(H − t, 1)           (MTM's D4RL recipe, H = 1000)

R_t includes r_t by default: r_t is the reward *for* a_t, which the token at step t sits beside, so
the return a policy asks for when choosing a_t must count it, and R_0 is the episode's (average)
return, what evaluation conditions on. The official MTM code sums from k = t + 1 (the last step's
return is always 0); ``include_current_reward=False`` reproduces that exactly (γ^{k−t−1} weights,
same H − t divisor). The average's divisor is clamped to 1, so an episode longer than H still gets
finite returns. Sums come from one float64 cumulative sum over all episodes back to back, discounted
sums from a log-depth doubling scan, never a Python loop over steps.
"""

from __future__ import annotations

import numpy as np

from mtm.errors import ConfigError

RTG_KINDS = ("sum", "discounted", "average")

#: Tukey's fence: an episode return above Q3 + OUTLIER_IQR (Q3 - Q1) of the data's returns is an outlier.
OUTLIER_IQR = 1.5
#: With fewer episodes, quartiles say little: no return is called an outlier.
MIN_EPISODES_FOR_OUTLIERS = 10
#: More returns than this share of the episodes above the fence (and at least MIN_EPISODES_FOR_OUTLIERS
#: of them) are not outliers but a better behaviour of their own: a medium + expert mixture.
MAX_OUTLIER_SHARE = 0.05


def typical_best_return(episode_returns: np.ndarray) -> tuple[float, int]:
    """The best episode return that is not an outlier above Tukey's fence, and how many lie above it.

    The default RCBC target. The best return can be one only a lucky start allows (mtm/ReacherPixels:
    50 of 50 where the target spawned under the fingertip, 10 episodes of 3000; the expert averages
    33); its return token never appears beside ordinary states, and asking for it breaks the policy
    (BENCHMARKS.md, Images). On data without such outliers (every shared dataset but
    hopper-medium-replay, one episode of 530) this is the best.

    Returns above the fence that are many (over MAX_OUTLIER_SHARE of the episodes, and at least
    MIN_EPISODES_FOR_OUTLIERS) are a mode of the data, not luck: on hopper-medium-v5 + hopper-expert-v5
    trained together, the fence of the mixture's quartiles fell between the two files' returns and
    called 77 of the 119 expert episodes outliers (target 2447 where the expert's episodes reach 3300).
    The target is then the typical best of that upper mode, by the same rule."""
    r = np.asarray(episode_returns, np.float64)
    if len(r) < MIN_EPISODES_FOR_OUTLIERS:
        return float(r.max()), 0
    q1, q3 = np.quantile(r, [0.25, 0.75])
    fence = q3 + OUTLIER_IQR * (q3 - q1)
    above = r[r > fence]
    if len(above) > MAX_OUTLIER_SHARE * len(r) and len(above) >= MIN_EPISODES_FOR_OUTLIERS:
        return typical_best_return(above)
    return float(r[r <= fence].max()), len(above)  # never empty: Q3 is below the fence


def returns_to_go(rewards: np.ndarray, kind: str = "sum", *, gamma: float = 0.99, horizon: int = 1000,
                  include_current_reward: bool = True) -> np.ndarray:
    """One episode's rewards (T,) -> its returns-to-go (T,) float32."""
    rewards = np.asarray(rewards)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must have shape (T,), got {rewards.shape}")
    return episodes_returns_to_go(rewards, np.array([rewards.shape[0]], dtype=np.int64), kind, gamma=gamma,
                                  horizon=horizon, include_current_reward=include_current_reward)


def episodes_returns_to_go(rewards: np.ndarray, lengths: np.ndarray, kind: str = "sum", *,
                           gamma: float = 0.99, horizon: int = 1000,
                           include_current_reward: bool = True) -> np.ndarray:
    """(N,) float32 returns-to-go of episodes whose rewards lie back to back in ``rewards`` (N,), with
    ``lengths`` (E,); no return ever includes a reward from another episode."""
    check_rtg_options(kind, gamma, horizon)
    rewards = np.asarray(rewards, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = rewards.shape[0]
    if rewards.ndim != 1 or int(lengths.sum()) != n or np.any(lengths < 0):
        raise ValueError(f"lengths {lengths.tolist()[:8]}… do not partition {rewards.shape} rewards")
    if n == 0:
        return np.zeros(0, np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ends = np.repeat(starts + lengths, lengths)  # exclusive end of each row's episode
    if kind == "discounted":
        out = _discounted_scan(rewards, ends, float(gamma))
    else:
        prefix = np.concatenate([[0.0], np.cumsum(rewards)])
        out = prefix[ends] - prefix[:-1]
    if not include_current_reward:
        # R'_t = R_{t+1} inside the episode, 0 at its last step: exactly Σ_{k>t} γ^{k−t−1} r_k.
        shifted = np.zeros_like(out)
        shifted[:-1] = out[1:]
        shifted[ends - 1 == np.arange(n)] = 0.0
        out = shifted
    if kind == "average":
        t = np.arange(n) - np.repeat(starts, lengths)
        out = out / np.maximum(horizon - t, 1)
    return out.astype(np.float32)


def check_rtg_options(kind: str, gamma: float, horizon: int) -> None:
    """Raise ConfigError for an unknown kind or an out-of-range gamma / horizon."""
    if kind not in RTG_KINDS:
        raise ConfigError(f"unknown return-to-go kind {kind!r}; choose one of {', '.join(RTG_KINDS)}")
    if kind == "discounted" and not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"discount gamma must lie in [0, 1], got {gamma}")
    if kind == "average" and horizon < 1:
        raise ConfigError(f"return-to-go horizon must be at least 1, got {horizon}")


def _discounted_scan(rewards: np.ndarray, ends: np.ndarray, gamma: float) -> np.ndarray:
    """y_t = r_t + γ·y_{t+1} within each episode, by doubling (Hillis–Steele).

    Invariant: before the pass with offset d, y_t = Σ γ^{k−t} r_k over k ∈ [t, min(t + d, end_t)).
    Adding γ^d·y_{t+d} (when t + d is still in t's episode) doubles the covered span, so
    ⌈log2(longest episode)⌉ passes finish. Unlike rescaling a global cumulative sum by γ^{−t},
    this only ever multiplies by γ^d ≤ 1, so it is exact to rounding for any episode length.
    """
    y = rewards.copy()
    n = y.shape[0]
    rows = np.arange(n)
    longest = int((ends - rows).max())
    d = 1
    while d < longest:
        same_episode = rows[:-d] + d < ends[:-d]
        y[:-d] = y[:-d] + np.where(same_episode, gamma**d * y[d:], 0.0)
        d *= 2
    return y
