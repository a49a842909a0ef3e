"""Checkpoints written by earlier versions of mtm keep loading and acting.

tests/data/checkpoint-0.1.0/ is a checkpoint as mtm 0.1.0 wrote it (a 4-step tiny Reacher run,
its training state left out): its metadata.json is the format every later reader must accept.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mtm.checkpoint import load_checkpoint
from mtm.policy import MTMPolicy
from mtm.run_metadata import HEADER_KEYS, RunMetadata

OLD = Path(__file__).parent / "data" / "checkpoint-0.1.0"


def test_a_0_1_0_checkpoint_loads_and_acts():
    checkpoint = load_checkpoint(OLD)
    assert checkpoint.step == 4
    policy = MTMPolicy.from_checkpoint(str(OLD), num_envs=2)
    assert policy.mode == "rcbc" and policy.state_keys == ["state"]
    policy.reset()
    actions = policy.act(np.zeros((2, 10), np.float32))
    assert actions.shape == (2, 2) and np.isfinite(actions).all()
    assert (np.abs(actions) <= 1.0).all()  # clipped to the saved action space


def test_a_checkpoint_from_before_the_optional_keys_loads(tmp_path):
    """The oldest metadata: no datasets, image_keys, runtime, split, typical_max or pixels."""
    folder = tmp_path / "old"
    shutil.copytree(OLD, folder)
    meta = json.loads((folder / "metadata.json").read_text())
    for key in ("image_keys", "runtime", "split"):
        del meta[key]
    del meta["data_info"]["pixels"]
    for key in ("typical_max", "outliers_above"):
        del meta["returns"]["episode_return"][key]
    (folder / "metadata.json").write_text(json.dumps(meta))
    policy = MTMPolicy.from_checkpoint(str(folder))
    assert policy.target_return == pytest.approx(meta["returns"]["episode_return"]["max"])
    assert policy.image_keys == []


def test_run_metadata_reads_and_writes_the_same_json():
    saved = json.loads((OLD / "metadata.json").read_text())
    meta = RunMetadata.from_dict(saved)
    assert meta.env_id == "Reacher-v5" and meta.dataset["kind"] == "file" and meta.rtg.kind == "average"
    assert meta.data_info.action_space["low"] == [-1.0, -1.0] and meta.returns.outliers_above == 0
    assert meta.stats["states"].dim == 10
    assert meta.to_dict() == {k: v for k, v in saved.items() if k not in HEADER_KEYS}
    assert list(meta.to_dict()) == [k for k in saved if k not in HEADER_KEYS]  # the same key order too
    assert load_checkpoint(OLD).run_metadata.to_dict() == meta.to_dict()


def test_run_metadata_of_the_oldest_files_and_unknown_keys():
    meta = RunMetadata.from_dict({"env_id": "Hopper-v5", "a_key_from_the_future": [1]})
    assert meta.state_keys == ["state"] and meta.image_keys == [] and meta.returns is None
    assert (meta.rtg.kind, meta.rtg.gamma, meta.rtg.horizon) == ("sum", 1.0, 1000)  # what policies assumed
    assert meta.dataset == {} and meta.datasets == []
    assert meta.to_dict()["a_key_from_the_future"] == [1]  # kept, not dropped
    two = RunMetadata.from_dict({"dataset": {"path": "a"}, "datasets": [{"path": "a"}, {"path": "b"}]})
    assert [d["path"] for d in two.datasets] == ["a", "b"] and two.to_dict()["dataset"] == {"path": "a"}
