"""Planning through the model's own masks (`mtm eval --mode plan`), in the spirit of M³PC.

At each env step, for each environment:

1. Propose: the RCBC mask gives an action a* (what mode rcbc would do). K candidate action
   sequences start from it: candidate 0 is a* itself, the others add Gaussian noise of
   `plan_noise` times the data's action std per dimension, clipped to the action space.
2. Imagine H steps: at step h the window shows the states and actions up to the candidate's
   current step and hides every return token; one forward pass reads the value of the current
   (state, action) from the value head (the return head where the model has none) and the next
   state from the state token after it (the forward-dynamics mask). The next action comes from
   the RCBC mask on the imagined state (plus noise, except candidate 0). A full window slides
   left by one step, as the policy's own buffers do.
3. Score each candidate, in the return token's units, by `plan_score`:
   - "q" (a model with a critic, model.critic; auto picks it there): the critic's Q of the real
     state and the candidate's first action, and with H > 1 of each imagined (state, RCBC action)
     after it, averaged; Q is a discounted return in the critic's reward units, so it is brought to
     the return token's (a reward rate) by (1 - discount) / reward_scale. The first step needs no
     Transformer pass: H = 1 costs K critic evaluations per env and step. Unlike the value head's,
     Q differs between the candidates' actions by tenths of a return std (BENCHMARKS.md, "Beyond
     the data"), so the temperature picks among them;
   - "value": the mean of its H values (the mean of several points of the imagined path is less
     exposed to one optimistic prediction than its last one);
   - "rewards" (a model with a reward head, model.reward_head): M3PC's score, the rewards the
     model predicts for the H imagined (state, action)s and the value of the state they lead to
     (read one imagined step further, with its RCBC action), discounted and normalised so that a
     constant reward rate scores itself: (1 - g) sum_h g^h r_h + g^H V_H, g = `plan_discount`.
     An average return token is a reward rate, so V_H stands for (1 - g) sum_{k>=0} g^k r_{H+k}.
   Act on the softmax-weighted mean of the first actions, at temperature `plan_temperature` in
   units of the return token's std (-> 0: the best candidate's action), or `plan_relative_temperature`
   times the std of the K scores where that is larger. The return token's std is the data's spread
   of returns, which is ten times narrower on halfcheetah-expert-v5 than on the medium files while
   Q's differences between the candidates are the same in reward units: in return stds alone the
   softmax followed one candidate there (weight 0.93; 85.4 against RCBC's 97.2), at the floor of one
   std of the scores it does not (97.1; BENCHMARKS.md, "The temperature's unit"). With `plan_max_gain`, the
   step from the RCBC action towards that mean is cut to max_gain / margin of it where the best
   candidate's margin over the RCBC action exceeds max_gain return stds: on expert data, where
   the data shows one action per state, the critic's Q is ten times steeper in the action than on
   medium data, and the planner following it scored 61.7 against RCBC's 97.6 (BENCHMARKS.md).
   The default is soft on purpose: the candidates' values differ by 1e-3 .. 1e-2 return stds, and a
   softmax that follows them closely (a temperature in units of that spread) picks the actions whose
   value the model over-estimates: hopper-medium-replay fell from 28.3 (RCBC) to 21.9, halfcheetah-
   medium-replay from 46.5 to 41.1 (BENCHMARKS.md, "Beyond the data").

Candidates x envs go through the model as one batch per forward pass, per env step: scored by value, H
value / dynamics passes and H - 1 proposal passes; by rewards, H + 1 and H; by q, H - 1 dynamics and
H - 1 proposal passes (the first step needs none) plus the critic. On the policy's device;
`precision: auto` is resolved for these passes on their own (many rows: bf16 where native, mtm.hardware).
Imagining (H > 1, or scoring by rewards) needs a model of two or more steps per window.
"""

from __future__ import annotations

import numpy as np
import torch

from mtm.errors import ConfigError
from mtm.hardware import resolve_precision
from mtm.model.loss import REWARD
from mtm.model.masks import POLICY_MASKS, without_action_history
from mtm.policy_config import PolicyConfig


def episode_seed(plan_seed: int, episode: int) -> int:
    """The seed of an episode's candidate noise: plan_seed and the episode's index as separate words
    (as mtm.rollout seeds its policies' per-episode noise), so nearby seeds share no stream."""
    return int(np.random.SeedSequence([plan_seed, episode & 0xFFFFFFFF, 3]).generate_state(1, np.uint64)[0] >> 1)


# plan_temperature's default by score, in return-token stds: the candidates' Q differ by ~0.2 stds;
# 0.02 follows them where Q is right and is soft enough where it extrapolates (seed 0, 20 episodes:
# halfcheetah-medium-replay 55.3 / 55.5 / 53.8 / 51.7 at 0.01 / 0.02 / 0.03 / 0.05, RCBC 46.1;
# hopper-medium-replay 34.1 / 36.4 / 36.9 / 36.8, RCBC 37.1). Values differ by 1e-3 .. 1e-2, where
# a softer softmax is safer (BENCHMARKS.md, "Planning by a critic trained beside the Transformer").
DEFAULT_TEMPERATURE = {"q": 0.02, "value": 0.05, "rewards": 0.05}


class Planner:
    """Chooses actions for a policy in mode plan; built by MTMPolicy (which has checked that the
    model has return tokens), called from its act()."""

    def __init__(self, model: torch.nn.Module, config: PolicyConfig, action_low: torch.Tensor,
                 action_high: torch.Tensor, *, num_envs: int, image_keys=()) -> None:
        if image_keys:
            raise ConfigError("mode 'plan' imagines future states, which a model of image observations cannot "
                              "predict as frames; use --mode rcbc")
        self.model = model
        self.candidates = config.plan_candidates
        self.horizon = config.plan_horizon
        self.temperature = config.plan_temperature  # set once the score is known (its default depends on it)
        self.action_history = config.action_history
        self.value_head = "value" if getattr(model, "has_value", False) else "returns"
        self.has_reward = bool(getattr(model, "has_reward", False))
        self.has_critic = bool(getattr(model, "has_critic", False))
        self.score_by = config.plan_score
        if self.score_by == "auto":
            self.score_by = "q" if self.has_critic else "rewards" if self.has_reward else "value"
        if self.score_by == "rewards" and not self.has_reward:
            raise ConfigError("plan_score 'rewards' needs a model with a reward head (train with "
                              "--set model.reward_head=true); use plan_score 'value'")
        if self.score_by == "q" and not self.has_critic:
            raise ConfigError("plan_score 'q' needs a model with a critic (train with --set model.critic=true); "
                              "use plan_score 'value'")
        if self.temperature is None:
            self.temperature = DEFAULT_TEMPERATURE[self.score_by]
        imagines = self.horizon > 1 or self.score_by == "rewards"
        if imagines and model.window < 2:
            # An imagined step needs a place in the window after the current one.
            raise ConfigError(f"plan_horizon {self.horizon} with plan_score {self.score_by!r} imagines the next "
                              "step, which needs a model of 2 or more steps per window (data.window); this one "
                              "has 1: use plan_horizon 1 and plan_score 'q' or 'value'")
        if not hasattr(model.tokenizers["actions"], "scale"):
            raise ConfigError("mode 'plan' perturbs actions in units of the data's action std, which a model of "
                              "binned actions (tokens.actions: binned) does not keep; use --mode rcbc, or train "
                              "with continuous actions")
        self.discount = config.plan_discount
        self.action_low, self.action_high = action_low, action_high
        self.noise_std = config.plan_noise
        self.relative_temperature = config.plan_relative_temperature
        self.max_gain = config.plan_max_gain
        self.noise = config.plan_noise * model.tokenizers["actions"].scale.detach()  # (A,) raw units
        self.return_scale = float(model.tokenizers["returns"].scale.detach().reshape(-1)[0])
        # Its passes hold num_envs x K windows, many more rows than act()'s own: its own precision.
        self.precision = resolve_precision(config.precision, action_low.device,
                                           work=model.inference_work(num_envs * self.candidates))
        self._autocast = self.precision.autocast(action_low.device)
        layout = model.layout
        device = action_low.device
        self._t = layout.timestep.to(device)  # (N,)
        self._states = layout.role("states").to(device)
        self._actions = layout.role("actions").to(device)
        self._returns = layout.role("returns").to(device)
        # Imagined steps propose their actions with the mode's own view (the one table of modes).
        self._rcbc = torch.stack([POLICY_MASKS["plan"](layout, c) for c in range(model.window)]).to(device)
        if not config.action_history:
            self._rcbc = without_action_history(self._rcbc, layout)
        # One noise stream per env slot, drawn on the CPU: restarted for each episode the slot runs
        # (`reset`, from MTMPolicy.reset), so an episode's candidates depend on its index alone, not
        # on how many envs run beside it. A slot never told its episode keeps its stream running.
        self.plan_seed = config.plan_seed
        self._streams = [torch.Generator().manual_seed(episode_seed(self.plan_seed, -1 - slot))
                         for slot in range(num_envs)]
        #: The last call's candidate first actions (n, K, A) and their scores (n, K), for tests and analysis.
        self.last_candidates: torch.Tensor | None = None
        self.last_scores: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None  # (n, K) the softmax weights the last call acted on

    def describe(self) -> dict:
        """The planner's settings, for reports."""
        head = "value head (expectile)" if self.value_head == "value" else "return head (mean; no value head)"
        if self.score_by == "q":
            head = f"critic's Q (IQL), mean over {self.horizon} step{'s' if self.horizon > 1 else ''}"
        elif self.score_by == "rewards":
            head = f"reward head over {self.horizon} steps + {head}, discount {self.discount}"
        return {"candidates": self.candidates, "horizon": self.horizon, "temperature": self.temperature,
                "relative_temperature": self.relative_temperature,
                "noise": self.noise_std, "max_gain": self.max_gain, "scored_by": head, "precision": self.precision.to_dict()}

    def reset(self, slots, episodes) -> None:
        """Episodes `episodes` start in env slots `slots`: each slot's noise stream restarts from its
        episode's index."""
        for slot, episode in zip(slots, episodes):
            self._streams[int(slot)] = torch.Generator().manual_seed(episode_seed(self.plan_seed, int(episode)))

    def _perturb(self, actions: torch.Tensor) -> torch.Tensor:
        """(n * K, A) -> the same with noise on every candidate but each env's first, clipped; env i's
        K rows draw from slot i's stream."""
        k, a = self.candidates, actions.shape[-1]
        eps = torch.stack([torch.randn(k, a, generator=self._streams[i]) for i in range(actions.shape[0] // k)])
        eps[:, 0] = 0.0
        eps = eps.view(actions.shape).to(actions.device)
        return torch.maximum(torch.minimum(actions + eps * self.noise, self.action_high), self.action_low)

    def _value_view(self, c: torch.Tensor) -> torch.Tensor:
        """(B, N): states at 0..c, actions at 0..c (the candidate's own at c; earlier ones only with
        action history), every return hidden."""
        t = self._t[None, :]
        now = t <= c[:, None]
        shown_actions = (t == c[:, None]) | (now if self.action_history else torch.zeros_like(now))
        return (self._states[None, :] & now) | (self._actions[None, :] & shown_actions)

    def __call__(self, batch: dict[str, torch.Tensor], c: torch.Tensor, proposal: torch.Tensor) -> torch.Tensor:
        """batch: the policy's window (n, L, ...) as act() built it (return tokens set, the action at
        c hidden); c: (n,) current positions; proposal: (n, A) the RCBC actions. -> (n, A)."""
        n, k = proposal.shape[0], self.candidates
        first = self._perturb(proposal.repeat_interleave(k, 0))
        if self.score_by == "q":
            score = self.imagine_q(batch, c, first, self.horizon).mean(1)
        elif self.score_by == "rewards":  # H rewards, then the value of the state they lead to
            values, rewards = self.imagine(batch, c, first, self.horizon + 1)
            g = self.discount
            weights = (1 - g) * g ** torch.arange(self.horizon, device=first.device, dtype=torch.float32)
            score = (rewards[:, : self.horizon] * weights).sum(1) + g ** self.horizon * values[:, self.horizon]
        else:
            values, _ = self.imagine(batch, c, first, self.horizon)
            score = values.mean(1)
        score = score.view(n, k)
        best = score.amax(1)
        weights = torch.softmax((score - best[:, None]) / self.softmax_unit(score)[:, None], 1)
        self.last_candidates, self.last_scores, self.last_weights = first.view(n, k, -1), score, weights
        chosen = (weights[:, :, None] * first.view(n, k, -1)).sum(1)
        if self.max_gain is None:
            return chosen
        # The step away from the RCBC action (candidate 0) shrinks where the critic promises more
        # than max_gain for it: a gain that large from a small change of action is extrapolation.
        margin = (best - score[:, 0]) / self.return_scale
        step = (self.max_gain / margin.clamp_min(1e-12)).clamp(max=1.0)
        return proposal + step[:, None] * (chosen - proposal)

    def softmax_unit(self, score: torch.Tensor) -> torch.Tensor:
        """(n, K) scores -> (n,) the softmax's temperature in raw score units: plan_temperature return
        stds, or plan_relative_temperature times the std of the row's K scores where that is larger."""
        unit = torch.full_like(score[:, 0], self.temperature * self.return_scale)
        if self.relative_temperature is None or score.shape[1] < 2:
            return unit
        return torch.maximum(unit, self.relative_temperature * score.std(1))

    def imagine_q(self, batch: dict[str, torch.Tensor], c: torch.Tensor, first: torch.Tensor, steps: int) -> torch.Tensor:
        """The critic's Q of each of the n * K candidates' (state, action) at `steps` imagined steps
        -> (n * K, steps), in return-token units: Q * (1 - discount) / reward_scale, the discounted
        reward rate it stands for (the return token's average return-to-go is a reward rate too).
        Step 0 is the real state and the candidate's first action, and needs no Transformer pass;
        later steps follow the forward-dynamics and RCBC views as `imagine` does."""
        model = self.model
        state = batch["states"][torch.arange(c.shape[0], device=c.device), c].repeat_interleave(self.candidates, 0)
        path = [(state, first)]
        if steps > 1:
            self.imagine(batch, c, first, steps, path=path)
        rate = (1.0 - model.config.iql_discount) / float(model.reward_scale)
        return torch.stack([model.q_value(s, a) for s, a in path], 1) * rate

    def imagine(self, batch: dict[str, torch.Tensor], c: torch.Tensor, first: torch.Tensor, steps: int,
                path: list | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Roll each of the n * K candidates (first actions `first`, (n * K, A), K per env in order)
        `steps` steps through the model -> (values, rewards), each (n * K, steps) in raw return-token
        units: the value and (with a reward head, else None) the reward read at each imagined step's
        (state, action). With `path` (the critic scores them): each imagined step's (state, action),
        (n * K, S) and (n * K, A), is appended to it; the passes then read next states only (the
        values and rewards returned stay 0) and the last step's pass is skipped."""
        k = self.candidates
        rows = torch.arange(first.shape[0], device=first.device)
        window = {key: value.repeat_interleave(k, 0) for key, value in batch.items()}
        window["actions"] = window["actions"].clone()
        window["states"] = window["states"].clone()
        c = c.repeat_interleave(k, 0).clone()
        window["actions"][rows, c] = first
        reads = (self.value_head, REWARD) if self.has_reward else (self.value_head,)
        values = torch.zeros(first.shape[0], steps, device=first.device)
        rewards = torch.zeros_like(values) if self.has_reward else None
        for h in range(steps):
            last = h == steps - 1
            if last and path is not None:
                break
            if not last:  # the next state needs a place: slide full windows left by one step
                self._slide(window, c)
            # Only the tokens read are decoded to the end: value and reward at c (not when the critic
            # scores the path), the state at c + 1.
            t = self._t[None, :]
            asked = self._states[None, :] & (t == c[:, None] + 1)
            heads = ("states",)
            if path is None:
                heads = reads if last else reads + ("states",)
                asked = asked | ((self._returns[None, :] | self._actions[None, :]) & (t == c[:, None]))
            with self._autocast:
                out = self.model.predict(window, self._value_view(c), heads=heads, queries=asked)
            if path is None:
                values[:, h] = out[self.value_head][rows, c].float().reshape(-1)
                if rewards is not None:
                    rewards[:, h] = out[REWARD][rows, c].float().reshape(-1)
            if last:
                break
            c = c + 1
            window["states"][rows, c] = out["states"][rows, c].float()
            window["actions"][rows, c] = 0.0
            with self._autocast:
                asked = self._actions[None, :] & (self._t[None, :] == c[:, None])
                proposed = self.model.predict(window, self._rcbc[c], heads=("actions",), queries=asked)["actions"]
            window["actions"][rows, c] = self._perturb(proposed[rows, c].float())
            if path is not None:
                path.append((window["states"][rows, c].clone(), window["actions"][rows, c].clone()))
        return values, rewards

    def _slide(self, window: dict[str, torch.Tensor], c: torch.Tensor) -> None:
        """Rows whose current position is the window's last: every buffer one step left, c - 1."""
        full = c == self.model.window - 1
        if not bool(full.any()):
            return
        for key, buf in window.items():
            if key == "timesteps":
                window[key] = torch.where(full[:, None], buf + 1, buf)
                continue
            shape = (-1,) + (1,) * (buf.dim() - 1)
            # Shift without wrapping: the last position keeps its own entries (the states and actions
            # there are overwritten next; its return token stays the current target, where a roll would
            # bring back the window's oldest one, a different target under --decrement).
            shifted = torch.cat([buf[:, 1:], buf[:, -1:]], 1)
            window[key] = torch.where(full.view(shape), shifted, buf)
        c -= full.long()

