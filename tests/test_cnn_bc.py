"""CNN-BC, the image baseline (mtm.model.cnn_bc): shapes, checkpoint round trip, the CLI end to end on
a tiny pixel dataset, the error on data without frames, and that it reads the frame."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mtm.checkpoint import load_checkpoint
from mtm.cli import main
from mtm.collect import CollectOptions, collect
from mtm.config import RunConfig, load_config
from mtm.config.loader import resolve_config_path
from mtm.data.episode import DatasetInfo, Episode
from mtm.data.formats.native import EpisodeWriter
from mtm.errors import ConfigError
from mtm.model import build_model, model_from_spec
from mtm.model.network import ModelConfig
from mtm.model.tokenizers import ContinuousTokenizer, ImageTokenizer
from mtm.policy import MTMPolicy, load_model
from mtm.training.loop import train

SIZE = 16  # frames of the synthetic datasets, small enough for a test


def _tokenizers(image_keys, keypoints=4):
    toks = {"states": ContinuousTokenizer(3, np.zeros(3), np.ones(3), 0.1, name="states")}
    for key in image_keys:
        toks[key] = ImageTokenizer(SIZE, SIZE, 3, encoder="keypoints", keypoints=keypoints, name=key)
    toks["actions"] = ContinuousTokenizer(2, np.zeros(2), np.ones(2), 0.1, name="actions")
    return toks


def _batch(image_keys, b=5, l=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {"states": torch.randn(b, l, 3, generator=g), "actions": torch.randn(b, l, 2, generator=g)}
    for key in image_keys:
        batch[key] = torch.randint(0, 256, (b, l, SIZE, SIZE, 3), generator=g, dtype=torch.uint8)
    return batch


def test_shapes_and_one_encoder_per_camera():
    keys = ["pixels", "side"]
    model = build_model(ModelConfig(kind="cnn_bc", width=32, mlp_layers=2), _tokenizers(keys), window=2)
    assert model.image_keys == keys and model.policy_modes == model.prediction_tasks == ("bc",)
    # The MLP reads the 3-D state and 2 x 4 keypoint coordinates per camera.
    assert model.net[0].in_features == 3 + 2 * (2 * 4)
    assert model.features(_batch(keys)).shape == (5, 2, 19)
    out = model(_batch(keys))
    assert set(out) == {"actions"} and out["actions"].shape == (5, 2, 1, 2)
    # Each camera has its own convolutions: changing one camera's frames moves its features only.
    a, b = _batch(keys, seed=1), _batch(keys, seed=1)
    b["side"] = torch.zeros_like(b["side"])
    fa, fb = model.features(a), model.features(b)
    assert torch.equal(fa[..., :11], fb[..., :11]) and not torch.allclose(fa[..., 11:], fb[..., 11:])
    assert model.tokenizers["pixels"].stem is not model.tokenizers["side"].stem


def test_spec_round_trip_rebuilds_the_same_model():
    model = build_model(ModelConfig(kind="cnn_bc", width=32, mlp_layers=1), _tokenizers(["pixels"]), window=1).eval()
    clone = model_from_spec(json.loads(json.dumps(model.spec())))
    clone.load_state_dict(model.state_dict())
    clone.eval()
    assert type(clone).__name__ == "CNNBCModel"
    batch = _batch(["pixels"], l=1)
    assert torch.equal(model.predict(batch)["actions"], clone.predict(batch)["actions"])


def test_model_without_frames_is_refused():
    with pytest.raises(ConfigError, match="cnn_bc needs image observations"):
        build_model(ModelConfig(kind="cnn_bc"), _tokenizers([]), window=1)


@pytest.fixture(scope="module")
def pixel_data(tmp_path_factory):
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("cnn_bc") / "pixels.hdf5"
    collect(CollectOptions(env_id="mtm/ReacherPixels-v0", policy="expert", episodes=4, output=path, num_envs=2),
            progress=False)
    return path


TINY_RUN = ["--set", "train.steps=4", "--set", "train.batch_size=8", "--set", "train.warmup_steps=1",
            "--set", "train.val_every=4", "--set", "train.val_windows=16", "--set", "train.save_every=4",
            "--set", "model.width=16", "--set", "tokens.image_keypoints=4", "--set", "train.device=cpu"]


def test_train_and_eval_from_the_cli(pixel_data, tmp_path):
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", "--config", "cnn-bc", "--data", str(pixel_data), "--run-dir", str(run),
                                  *TINY_RUN])
    assert r.exit_code == 0, r.output
    ck = load_checkpoint(run)
    assert ck.metadata["model"]["config"]["kind"] == "cnn_bc" and ck.metadata["image_keys"] == ["pixels"]
    assert ck.metadata["model"]["tokenizers"]["pixels"]["encoder"] == "keypoints"
    rows = [json.loads(line) for line in open(run / "metrics.jsonl") if "train/loss" in line]
    assert {k for k in rows[-1] if k.startswith("train/loss_")} == {"train/loss_actions"}
    model = load_model(ck)
    assert type(model).__name__ == "CNNBCModel"
    policy = MTMPolicy(model, ck.metadata, num_envs=2)
    assert policy.mode == "bc"
    report_path = tmp_path / "eval.json"
    r = CliRunner().invoke(main, ["eval", "--checkpoint", str(run), "--episodes", "2", "--num-envs", "2",
                                  "--mode", "bc", "--output", str(report_path)])
    assert r.exit_code == 0, r.output
    report = json.loads(report_path.read_text())
    assert report["model_kind"] == "cnn_bc" and report["episodes"] == 2 and report["mode"] == "bc"
    assert len(report["per_episode"]) == 2 and report["normalized_score_mean"] is not None


def test_data_without_frames_is_a_clear_cli_error(pixel_data, tmp_path):
    r = CliRunner().invoke(main, ["train", "--config", "cnn-bc", "--data", str(pixel_data), "--run-dir",
                                  str(tmp_path / "run"), "--set", "tokens.image_keys=[]", *TINY_RUN])
    assert r.exit_code == 1
    assert "error:" in r.output and "cnn_bc needs image observations" in r.output
    assert "Traceback" not in r.output


def _dot_episodes(path, episodes=40, steps=10, seed=0):
    """Each frame shows one bright dot at a random place; the action is the dot's (column, row)
    scaled to [-1, 1], the state is noise: only the frame tells the action."""
    rng = np.random.default_rng(seed)
    with EpisodeWriter(path, DatasetInfo(source_format="test", source="dots")) as writer:
        for _ in range(episodes):
            pos = rng.integers(2, SIZE - 2, size=(steps + 1, 2))
            frames = np.zeros((steps + 1, SIZE, SIZE, 3), np.uint8)
            for t, (row, col) in enumerate(pos):
                frames[t, row - 1:row + 2, col - 1:col + 2] = 255
            actions = (pos[:steps, ::-1] - (SIZE - 1) / 2) / ((SIZE - 1) / 2)
            writer.add(Episode({"state": rng.normal(size=(steps + 1, 3)).astype(np.float32), "pixels": frames},
                               actions.astype(np.float32), np.zeros(steps, np.float32), np.zeros(steps, bool),
                               np.eye(1, steps, steps - 1, dtype=bool)[0]))
    return path


def test_the_frame_matters(tmp_path):
    """On data whose action is a function of the frame only, CNN-BC fits it and MLP-BC (state only)
    stays at the mean's error."""
    torch.set_num_threads(1)
    data = _dot_episodes(tmp_path / "dots.hdf5")
    common = [f"data.path={data}", "data.val_fraction=0.2", "train.steps=150", "train.val_every=150",
              "train.val_windows=64", "train.batch_size=64", "train.lr=3e-3", "train.warmup_steps=20",
              "train.device=cpu", "train.precision=fp32", "model.width=64", "data.rtg_horizon=10"]
    cnn = load_config(RunConfig, resolve_config_path("cnn-bc"),
                      common + [f"train.run_dir={tmp_path / 'cnn'}", "tokens.image_keypoints=4"])
    mlp = load_config(RunConfig, resolve_config_path("mlp-bc"), common + [f"train.run_dir={tmp_path / 'mlp'}"])
    cnn_ratio = train(cnn, progress=False).val["bc"]["ratio"]
    mlp_ratio = train(mlp, progress=False).val["bc"]["ratio"]
    assert cnn_ratio < 0.1, cnn_ratio
    assert mlp_ratio > 0.9, mlp_ratio
