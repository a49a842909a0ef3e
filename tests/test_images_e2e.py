"""Images end to end: collect pixels, train with image tokens (or without), act from rendered frames."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import TINY_REACHER
from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.collect import CollectOptions, collect
from mtm.config import RunConfig, load_config
from mtm.data.formats.native import NativeSource
from mtm.errors import ConfigError
from mtm.evaluation import evaluate_checkpoint
from mtm.training.loop import train

PIXEL_ENV = "mtm/ReacherPixels-v0"


@pytest.fixture(scope="module")
def pixel_data(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("pixels") / "pixels.hdf5"
    collect(CollectOptions(env_id=PIXEL_ENV, policy="expert", episodes=6, output=path, num_envs=3), progress=False)
    return path


def _train(data, run, extra):
    cfg = load_config(RunConfig, None, TINY_REACHER + [f"data.path={data}", f"train.run_dir={run}", "train.steps=6",
                                                       "train.val_every=6", "train.val_windows=32",
                                                       "train.batch_size=16", *extra])
    return train(cfg, progress=False)


@pytest.mark.parametrize("encoder", ["patch", "keypoints"])
def test_train_and_eval_with_image_tokens(pixel_data, tmp_path, encoder):
    result = _train(pixel_data, tmp_path / "img", ["tokens.image_patch_size=16", f"tokens.image_encoder={encoder}",
                                                   "tokens.image_keypoints=4"])
    assert {"bc", "fd", "id"} <= set(result.val)
    ck = load_checkpoint(tmp_path / "img")
    assert ck.metadata["image_keys"] == ["pixels"] and ck.metadata["state_keys"] == ["state"]
    spec = ck.metadata["model"]["tokenizers"]["pixels"]
    assert spec["type"] == "image" and ck.metadata["model"]["window"] == 4
    assert spec["encoder"] == encoder and spec["keypoints"] == (4 if encoder == "keypoints" else 0)
    # No per-modality loss for the input-only image modality.
    rows = [json.loads(line) for line in open(tmp_path / "img" / "metrics.jsonl") if "train/loss" in line]
    assert "train/loss_pixels" not in rows[-1] and "train/loss_states" in rows[-1]
    report = evaluate_checkpoint(ck, episodes=2, num_envs=2)
    assert report["env_id"] == PIXEL_ENV and report["episodes"] == 2 and report["normalized_score_mean"] is not None


def test_same_data_without_image_tokens(pixel_data, tmp_path):
    _train(pixel_data, tmp_path / "state", ["tokens.image_keys=[]"])
    ck = load_checkpoint(tmp_path / "state")
    assert ck.metadata["image_keys"] == [] and "pixels" not in ck.metadata["model"]["tokenizers"]
    assert evaluate_checkpoint(ck, episodes=1, num_envs=1)["episodes"] == 1


def test_image_key_errors(pixel_data, tmp_path):
    with pytest.raises(ConfigError, match=r"\[.depth.\] are not image observations of .*\(it has \[.pixels.\]\)"):
        _train(pixel_data, tmp_path / "bad", ["tokens.image_keys=[depth]"])


def test_two_cameras_collect_convert_inspect_train_eval(tmp_path):
    """Two image keys (the view from above and the side view of mtm/PusherPixels2Cam-v0): both are
    recorded, converted, listed, tokenised, and the policy acts from both frames rendered in the
    eval envs."""
    env_id = "mtm/PusherPixels2Cam-v0"
    data = tmp_path / "two.hdf5"
    result = collect(CollectOptions(env_id=env_id, policy="expert", episodes=3, output=data, num_envs=3), progress=False)
    assert result.episodes == 3
    with NativeSource(data) as src:
        episode = src.episode(0)
    assert {k: v.shape for k, v in episode.observations.items()} == {
        "state": (101, 17), "pixels": (101, 64, 64, 3), "pixels_side": (101, 64, 64, 3)}
    # mtm convert keeps both cameras (frames identical), and mtm inspect lists both.
    converted = tmp_path / "converted.hdf5"
    assert CliRunner().invoke(main, ["convert", str(data), str(converted)]).exit_code == 0
    with NativeSource(converted) as src:
        again = src.episode(0)
    for key in ("pixels", "pixels_side"):
        np.testing.assert_array_equal(again.observations[key], episode.observations[key])
    shown = CliRunner().invoke(main, ["inspect", str(converted), "--json"])
    assert shown.exit_code == 0, shown.output
    modalities = json.loads(shown.output)["modalities"]
    assert modalities["observations/pixels"]["shape"] == modalities["observations/pixels_side"]["shape"] == [64, 64, 3]
    _train(converted, tmp_path / "run", ["tokens.image_encoder=keypoints", "tokens.image_keypoints=4",
                                         "data.rtg_horizon=100"])
    ck = load_checkpoint(tmp_path / "run")
    assert ck.metadata["image_keys"] == ["pixels", "pixels_side"]
    tokenizers = ck.metadata["model"]["tokenizers"]
    assert tokenizers["pixels"]["type"] == tokenizers["pixels_side"]["type"] == "image"
    report = evaluate_checkpoint(ck, episodes=2, num_envs=2)
    assert report["env_id"] == env_id and report["episodes"] == 2 and report["normalized_score_mean"] is not None
