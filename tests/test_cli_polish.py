"""The command line's small courtesies (#27 item 7): output folders made when missing (never an
overwrite without --overwrite), did-you-mean for --config, counts checked while parsing and named,
singular nouns for one, "lower is better" beside ratios, every built-in config in --help, a
watchable video frame rate, v5 file names in examples, and one file refused twice in --data."""

import json
import re

import pytest
from click.testing import CliRunner

from mtm.cli import main
from mtm.config import builtin_configs, resolve_config_path
from mtm.errors import ConfigError
from mtm.evaluation import format_report
from mtm.video import MAX_VIDEO_FPS, video_rate
from test_train import write_linear_system


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    return errors[0]


def test_a_missing_output_folder_is_created_but_nothing_is_overwritten(reacher_run, tmp_path):
    report = tmp_path / "reports" / "today" / "eval.json"
    result = invoke("eval", "--checkpoint", reacher_run, "--episodes", 1, "--num-envs", 1, "--no-progress",
                    "--output", report)
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["episodes"] == 1
    error = one_error(invoke("eval", "--checkpoint", reacher_run, "--episodes", 1, "--output", report))
    assert error == f"error: {report}: already exists; pass --overwrite to replace it"


def test_config_names_get_a_suggestion():
    with pytest.raises(ConfigError, match="smal: no such config file or built-in config; did you mean small\\? "):
        resolve_config_path("smal")
    with pytest.raises(ConfigError, match="did you mean pixels\\?"):
        resolve_config_path("pixel")
    with pytest.raises(ConfigError) as caught:
        resolve_config_path("zzzzzz")
    assert "did you mean" not in str(caught.value) and "small" in str(caught.value)  # the list, no guess
    error = one_error(invoke("train", "--config", "refrence", "--data", "x.hdf5"))
    assert "did you mean reference?" in error


@pytest.mark.parametrize("args, message", [
    (["eval", "--checkpoint", "no-such-run", "--episodes", "0"], "error: --episodes must be >= 1, got 0"),
    (["eval", "--checkpoint", "no-such-run", "--num-envs", "-2"], "error: --num-envs must be >= 1, got -2"),
    (["collect", "--env", "Reacher-v5", "--episodes", "0", "--output", "x.hdf5"], "error: --episodes must be >= 1"),
    (["collect", "--env", "Reacher-v5", "--episodes", "2", "--num-envs", "0", "--output", "x.hdf5"],
     "error: --num-envs must be >= 1, got 0"),
    (["demo", "--episodes", "0"], "error: --episodes must be >= 1, got 0"),
])
def test_counts_are_checked_while_parsing_and_name_the_option(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert one_error(invoke(*args)).startswith(message)
    assert list(tmp_path.iterdir()) == []  # nothing was loaded, collected or written


def test_one_episode_and_one_env_are_singular():
    report = {"env_id": "Hopper-v5", "episodes": 1, "num_envs": 1, "mode": "bc", "return_mean": 1.0,
              "return_std": 0.0, "length_mean": 5.0, "env_steps_per_s": 100.0}
    text = format_report(report)
    assert "Hopper-v5: 1 episode, mode bc" in text and "(1 env, policy included)" in text
    text = format_report({**report, "episodes": 3, "num_envs": 2})
    assert "3 episodes" in text and "(2 envs, " in text


def test_ratios_say_lower_is_better(reacher_run):
    result = invoke("eval", "--checkpoint", reacher_run, "--task", "fd", "--task", "id")
    assert result.exit_code == 0, result.output
    assert "ratio = MSE / baseline, lower is better" in result.stdout


def test_train_help_lists_every_built_in_config_and_v5_files():
    # Help is wrapped to the terminal, possibly after the hyphen of a name (mlp-<newline>rcbc).
    text = re.sub(r"-\n\s*", "-", invoke("train", "--help").output).replace("\n", " ")
    for name in builtin_configs():
        assert name in text
    assert "pixels" in builtin_configs()
    for command in ("train", "eval", "collect", "convert", "inspect", "demo"):
        assert "-v2" not in invoke(command, "--help").output, command


def test_video_frame_rate_is_real_time_capped():
    assert video_rate(125) == (MAX_VIDEO_FPS, pytest.approx(0.24))  # Hopper, Walker2d: slow motion
    assert video_rate(50) == (30, pytest.approx(0.6))  # Reacher
    assert video_rate(20) == (20, 1.0)  # HalfCheetah: real time


def test_one_file_given_twice_to_data_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_linear_system(tmp_path / "a.hdf5", episodes=2, length=5)
    (tmp_path / "sub").mkdir()
    error = one_error(invoke("train", "--data", "a.hdf5", "--data", "b.hdf5", "--data", "sub/../a.hdf5",
                             "--run-dir", "run"))
    assert error.startswith("error: one file given twice: --data a.hdf5 (1st) and --data sub/../a.hdf5 (3rd); "
                            "give each dataset once")
    # The same from a config's keys.
    error = one_error(invoke("train", "--set", "data.path=a.hdf5", "--set", 'data.extra_paths=["./a.hdf5"]',
                             "--run-dir", "run"))
    assert error.startswith("error: data.path (a.hdf5) and data.extra_paths[0] (./a.hdf5) are the same file")
    assert not (tmp_path / "run").exists()
