"""`mtm eval` warns when its episodes would start where the training data's did: the reset seeds
`mtm collect` used travel from the file through the checkpoint to the evaluation."""

import dataclasses

from click.testing import CliRunner

from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.data.episode import DatasetInfo
from mtm.evaluation.rollouts import seed_overlap_warning
from mtm.training.metadata import collected_reset_seeds


def test_the_collected_reset_seeds_are_read_from_the_file_or_inferred_for_older_files():
    info = DatasetInfo(source_format="collect", source="mtm collect", extra={"reset_seeds": [[0, 3], [7, 8]], "seed": 0,
                                                       "episodes_requested": 10, "interrupted": True})
    assert collected_reset_seeds(info) == [[0, 3], [7, 8]]
    older = dataclasses.replace(info, extra={"seed": 5, "episodes_requested": 10})
    assert collected_reset_seeds(older) == [[5, 14]]
    assert collected_reset_seeds(dataclasses.replace(info, extra={"seed": 5, "episodes_requested": 10,
                                                                  "interrupted": True})) is None
    assert collected_reset_seeds(dataclasses.replace(info, source_format="d4rl")) is None


def test_the_warning_counts_the_shared_seeds_and_names_the_first_held_out_one(reacher_run):
    metadata = load_checkpoint(reacher_run).run_metadata
    assert metadata.data_info.reset_seeds == [[0, 11]]  # 12 episodes collected from seed 0
    env = metadata.env_id
    assert seed_overlap_warning(metadata, env, 10, 5) == (
        "2 of 5 evaluation episodes (reset seeds 10..14) start where training episodes did (the data was "
        "collected with reset seeds 0..11); for held-out starts pass --seed 12")
    assert seed_overlap_warning(metadata, env, 12, 5) is None
    assert seed_overlap_warning(metadata, "mtm/PointMass-v0", 0, 5) is None  # another env: other start states


def test_mtm_eval_prints_the_warning_once_and_not_for_held_out_seeds(reacher_run):
    shared = CliRunner().invoke(main, ["eval", "--checkpoint", str(reacher_run), "--episodes", "2", "--num-envs", "2",
                                       "--no-progress"])
    assert shared.exit_code == 0, shared.output
    lines = [line for line in shared.output.splitlines() if line.startswith("warning: ")]
    assert lines == ["warning: 2 of 2 evaluation episodes (reset seeds 0..1) start where training episodes did "
                     "(the data was collected with reset seeds 0..11); for held-out starts pass --seed 12"]
    held_out = CliRunner().invoke(main, ["eval", "--checkpoint", str(reacher_run), "--episodes", "2", "--num-envs",
                                         "2", "--seed", "12", "--no-progress"])
    assert held_out.exit_code == 0 and "warning" not in held_out.output
