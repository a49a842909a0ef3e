"""What a person sees while a run trains: a progress bar on a terminal, plain lines anywhere else.

A `\\r` bar redrawn every step is unreadable in a log file, so `mtm train` draws it only when both
stdout and stderr are terminals and the user did not pass --no-progress. Otherwise it prints one
line per train.log_every step, stamped with the time of day:

    03:41:07  step  200/1000  loss 0.4123  lr 5.0e-04  2890 samples/s  elapsed 0:00:12  ETA 0:00:48

and, in either mode, one line per validation and per in-training evaluation (their numbers are
otherwise only in metrics.jsonl and TensorBoard). Elapsed is this session's wall time (a resumed
run starts again at 0); the ETA extrapolates its time per step, validation and evaluation
included, to the steps that are left.
"""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable

from tqdm.auto import tqdm

Say = Callable[[str], None]


def interactive() -> bool:
    """A bar can be redrawn in place: stdout (the lines' stream) and stderr (the bar's) are terminals."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdout, sys.stderr))


def format_duration(seconds: float) -> str:
    """H:MM:SS, hours unbounded."""
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def step_line(step: int, total: int, scalars: dict[str, float], elapsed: float, eta: float | None) -> str:
    width = len(str(total))
    text = (f"step {step:>{width}}/{total}  loss {scalars['train/loss']:.4f}  lr {scalars['train/lr']:.1e}  "
            f"{scalars['charts/samples_per_s']:.0f} samples/s")
    text += f"  elapsed {format_duration(elapsed)}"
    return text + (f"  ETA {format_duration(eta)}" if eta is not None else "")


def val_line(step: int, errors: dict[str, dict]) -> str:
    ratios = ", ".join(f"{task} {e['ratio']:.3f}" for task, e in errors.items())
    return f"validation at step {step}: error / baseline error {ratios} (lower is better)"


def eval_line(step: int, report: dict) -> str:
    episodes = report["episodes"]
    text = (f"evaluation at step {step}: {report['env_id']}, {episodes} episode{'' if episodes == 1 else 's'}, "
            f"mode {report.get('mode', '-')}: return {report['return_mean']:.2f} +/- {report['return_std']:.2f}")
    if report.get("normalized_score_mean") is not None:
        text += f", normalised score {report['normalized_score_mean']:.1f} +/- {report['normalized_score_std']:.1f}"
    return text


class TrainProgress:
    """The loop's reporter. `bar`: a tqdm bar (plus validation and evaluation lines written above
    it); else a timestamped line per log step. `say` None (or a rank other than 0): silent."""

    def __init__(self, say: Say | None, *, total: int, start: int, bar: bool,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime.datetime] | None = None) -> None:
        self.say = say
        self.total, self.start = total, start
        self.clock = clock
        self.now = now or datetime.datetime.now
        self.began = clock()
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
                        disable=not (bar and say is not None))
        self.lines = say is not None and not bar

    def _stamp(self, text: str) -> str:
        return f"{self.now():%H:%M:%S}  {text}"

    def _note(self, text: str) -> None:
        if self.say is None:
            return
        if self.bar.disable:
            self.say(self._stamp(text))
        else:
            self.bar.write(text)  # above the bar, which redraws below it

    def step(self) -> None:
        self.bar.update(1)

    def logged(self, step: int, scalars: dict[str, float]) -> None:
        if not self.bar.disable:
            self.bar.set_postfix(loss=f"{scalars['train/loss']:.4f}", samples_s=f"{scalars['charts/samples_per_s']:.0f}")
        if not self.lines:
            return
        elapsed = self.clock() - self.began
        done = step - self.start
        eta = elapsed / done * (self.total - step) if done > 0 else None
        self.say(self._stamp(step_line(step, self.total, scalars, elapsed, eta)))

    def validated(self, step: int, errors: dict[str, dict]) -> None:
        if errors:
            self._note(val_line(step, errors))

    def evaluated(self, step: int, report: dict) -> None:
        self._note(eval_line(step, report))

    def close(self) -> None:
        self.bar.close()
