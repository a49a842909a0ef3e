"""Fault injection, part 1: bad files.

README promises that a user mistake is one `error:` line and exit 1, with nothing left behind.
Every reader (d4rl, native, minari, robomimic) x every malformation (faultkit.MALFORMATIONS) x
every command that reads data (inspect, convert, train) is checked against that promise.

The number of cases tried is printed at the end of the session (conftest.py).
"""

from pathlib import Path

import pytest
from click.testing import CliRunner

import faultkit as fk
from faultkit import MALFORMATIONS, WRITERS, error_line, hdf5_file
from mtm.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


TINY = ["model.width=16", "model.encoder_layers=1", "model.decoder_layers=1", "model.heads=1", "model.dropout=0.1",
        "train.batch_size=16", "train.lr=1e-3", "train.warmup_steps=2", "train.log_every=1", "train.val_every=0",
        "train.device=cpu", "train.deterministic=true", "train.keep_last=0", "data.rtg_horizon=50"]


def train_args(data: Path, run_dir: Path, *extra: str) -> list:
    args = ["train", "--no-progress", "--data", data, "--run-dir", run_dir]
    for item in TINY + list(extra):
        args += ["--set", item]
    return args


# ---- 1. bad files -----------------------------------------------------------------------------

EPISODE_NAMES = {"native": ("ep_000000", "ep_000001"), "minari": ("episode_0", "episode_1"),
                 "robomimic": ("demo_0", "demo_1")}
EXPECTED = {  # malformation -> format -> the heart of the one error line ({file}, {ep0}, {ep1} filled in)
    "missing": {"*": "{given}: no such file"},
    "not-hdf5": {"*": "{file}: not an HDF5 file"},
    "truncated": {"*": "{file}: HDF5 file is truncated or corrupt"},
    "no-episodes": {"d4rl": "{file}: the file holds no transitions", "robomimic": "{file}: holds no demos",
                    "*": "{file}: holds no episodes"},
    "no-actions": {"d4rl": "{file}: missing D4RL dataset(s) actions", "minari": "{file} {ep1}: missing 'actions'",
                   "*": "{file} {ep1}: missing dataset 'actions'"},
    "short-rewards": {"d4rl": "{file}: 'rewards' has 14 rows but 'observations' has 15",
                      "*": "{file} {ep1}: rewards has shape (3,) but there are 4 actions"},
    "nan-state": {"d4rl": "{file}: 'observations' holds NaN or inf (first at row 7)",
                  "*": "{file} {ep1}: observations/state holds NaN or inf (first at step 2)"},
    "inf-action": {"d4rl": "{file}: 'actions' holds NaN or inf (first at row 6)",
                   "*": "{file} {ep1}: actions holds NaN or inf (first at step 1)"},
    "state-size": {"d4rl": "{file}: 'next_observations' has shape (15, 2), 'observations' has (15, 3)",
                   "*": "{file} {ep1}: observations/state has per-step shape (2,) but {ep0} has (3,)"},
    "text-state": {"d4rl": "{file}: 'observations' has dtype |S1; expected numbers",
                   "native": "{file} {ep1}: observations/state holds |S1 data; expected numbers",
                   "minari": "{file} {ep1} observations/state: holds |S1 data; mtm needs numeric observations",
                   "robomimic": "{file} {ep1}: obs/state holds |S1 data; mtm needs numeric observations"},
    "zero-steps": {"d4rl": "{file}: 'observations' has shape (15,); expected (N, dim)",
                   "robomimic": "{file} {ep1}: demo has no steps", "*": "{file} {ep1}: episode has no steps"},
    "bad-metadata": {"d4rl": "{file}: 'terminals' must hold booleans (or 0/1), found dtype |S3",
                     "native": "{file}: schema version 99 is newer than this mtm understands",
                     "minari": "{given}/data/metadata.json: not valid JSON",
                     "robomimic": "{file}: data.attrs['env_args'] is not valid JSON"},
}


@pytest.mark.parametrize("what", MALFORMATIONS)
@pytest.mark.parametrize("fmt", list(WRITERS))
def test_bad_file_is_one_error_line_for_every_command(tmp_path, fmt, what):
    given = WRITERS[fmt](tmp_path / ("dataset" if fmt == "minari" else "dataset.hdf5"))
    fk.edit(fmt, given, what)
    ep0, ep1 = EPISODE_NAMES.get(fmt, ("", ""))
    expected = EXPECTED[what].get(fmt, EXPECTED[what].get("*")).format(
        given=given, file=hdf5_file(fmt, given), ep0=ep0, ep1=ep1)
    out, run = tmp_path / "out.hdf5", tmp_path / "run"
    for args in (["inspect", given], ["convert", given, out], train_args(given, run, "train.steps=2")):
        result = invoke(*args)
        line = error_line(result.output, result.exit_code)
        assert expected in line, (args[0], line)
        fk.tried("bad-file cases")
    assert not out.exists() and not run.exists() and not fk.leftovers(tmp_path)
