"""Checkpoints (exact resume, atomicity, retention, errors) and dataset identity."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import mtm.checkpoint as ckpt
from mtm.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from mtm.data.identity import dataset_identity
from mtm.errors import DataError

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"train": {"lr": 1e-3, "betas": [0.9, 0.999]}, "model": {"width": 8}}


def tiny_model() -> torch.nn.Module:
    # Dropout so that continuing training consumes the torch RNG, which the resume must restore.
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.2), torch.nn.GELU(), torch.nn.Linear(8, 2))


def make_training(seed: int = 0):
    torch.manual_seed(seed)
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 4))
    return model, opt, sched


def train_steps(model, opt, sched, n: int) -> None:
    for _ in range(n):
        x = torch.randn(16, 4) + float(np.random.rand()) + random.random()  # every RNG matters
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


def save(run_dir: Path, step: int, **kwargs) -> Path:
    kwargs.setdefault("model_state", {"w": torch.full((2,), float(step))})
    kwargs.setdefault("config", CONFIG)
    kwargs.setdefault("metadata", {"env_id": "Hopper-v5"})
    return save_checkpoint(run_dir, step, **kwargs)


def data_error(path) -> str:
    with pytest.raises(DataError) as info:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(info.value)
    return str(info.value)


# ------------------------------------------------------------------------------------------ resume


def test_resume_is_bit_identical(tmp_path):
    random.seed(1)
    np.random.seed(1)
    model, opt, sched = make_training()
    train_steps(model, opt, sched, 3)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": 3, "rng": capture_rng_state()}
    path = save(tmp_path, 3, model_state=model.state_dict(), train_state=state)
    train_steps(model, opt, sched, 4)  # the uninterrupted run
    expected = [p.detach().clone() for p in model.parameters()]

    random.seed(99)  # scramble everything the resume must restore
    np.random.seed(99)
    loaded = load_checkpoint(tmp_path)
    assert loaded.path == path and loaded.step == 3 and loaded.config == CONFIG
    model2, opt2, sched2 = make_training(seed=123)
    model2.load_state_dict(loaded.model_state)
    resumed = loaded.load_train_state()
    assert resumed["step"] == 3
    assert list(resumed["optimizer"]["state"]) == [0, 1, 2, 3]  # int keys survive
    assert resumed["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)  # tuples too
    opt2.load_state_dict(resumed["optimizer"])
    sched2.load_state_dict(resumed["scheduler"])
    restore_rng_state(resumed["rng"])
    train_steps(model2, opt2, sched2, 4)
    for a, b in zip(expected, model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_rng_round_trip(tmp_path):
    torch.manual_seed(5)
    save(tmp_path, 1, train_state={"rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    restore_rng_state(load_checkpoint(tmp_path).load_train_state()["rng"])
    assert (random.random(), np.random.rand(3).tolist(), np.random.randn(), torch.rand(3).tolist()) == expected


def test_train_state_encoding_is_exact(tmp_path):
    tensor = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    state = {
        "ints": {0: "a", 1: {2: (3, [4, (5,)])}},
        "mixed_keys": {("k", 1): 1.5, None: False, 2.5: "x"},
        "marker_like": {"__tuple__": 1, "__tensor__": "not a tensor"},
        "floats": [0.1 + 0.2, 1e-300, -0.0, math.inf, 2.0**-1074],
        "nan": math.nan,
        "np_array": np.arange(5, dtype=np.uint32),
        "np_float": np.ones((2, 2), dtype=np.float64) / 3,
        "np_scalar": np.float32(0.5),
        "tensors": [tensor, tensor.t(), torch.tensor(7), torch.zeros(0, 3), torch.ones(3, dtype=torch.bfloat16)],
        "same": {"0": torch.ones(1), 0: torch.zeros(1)},  # tensor names must not collide
    }
    save(tmp_path, 1, train_state=state)
    out = load_checkpoint(tmp_path).load_train_state()
    assert out["ints"] == {0: "a", 1: {2: (3, [4, (5,)])}}
    assert out["mixed_keys"] == {("k", 1): 1.5, None: False, 2.5: "x"}
    assert out["marker_like"] == state["marker_like"]
    assert out["floats"] == state["floats"] and math.copysign(1, out["floats"][2]) == -1
    assert math.isnan(out["nan"])
    assert out["np_array"].dtype == np.uint32 and out["np_array"].tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(out["np_float"], state["np_float"])
    assert out["np_scalar"] == 0.5
    for a, b in zip(state["tensors"], out["tensors"], strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    assert torch.equal(out["same"]["0"], torch.ones(1)) and torch.equal(out["same"][0], torch.zeros(1))


def test_tied_and_non_contiguous_weights(tmp_path):
    shared = torch.randn(3, 4)
    weights = {"embed": shared, "head": shared, "t": shared.t(), "bf": torch.randn(2, dtype=torch.bfloat16)}
    loaded = load_checkpoint(save(tmp_path, 1, model_state=weights)).model_state
    assert set(loaded) == set(weights)
    for k in weights:
        assert torch.equal(loaded[k], weights[k]) and loaded[k].dtype == weights[k].dtype


def test_metadata(tmp_path):
    ident = {"path": "/d.hdf5", "sha256": "ab" * 32, "size": 3}
    meta = load_checkpoint(save(tmp_path, 42, metadata={"env_id": "Hopper-v5", "dataset": ident})).metadata
    assert meta["format"] == "mtm-checkpoint" and meta["step"] == 42 and meta["mtm_version"]
    assert meta["env_id"] == "Hopper-v5" and meta["dataset"] == ident and meta["created"].endswith("+00:00")
    with pytest.raises(ValueError, match="set by save_checkpoint"):
        save(tmp_path, 43, metadata={"step": 1})


# ---------------------------------------------------------------------------- pointer and retention


def test_last_pointer_and_retention(tmp_path):
    for step in (1, 2, 3, 4, 5):
        path = save(tmp_path, step, keep_last=2)
    root = tmp_path / "checkpoints"
    assert path == root / "step_00000005"
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_00000004", "step_00000005"]
    assert (root / "last").read_text() == "step_00000005\n"
    assert load_checkpoint(tmp_path).step == 5
    assert load_checkpoint(root).step == 5
    assert load_checkpoint(root / "step_00000004").step == 4
    for step in (6, 7):
        save(tmp_path, step, keep_last=0)  # 0 keeps everything
    assert len(list(root.glob("step_*"))) == 4
    assert not load_checkpoint(tmp_path).has_train_state


def test_resaving_a_step_replaces_it(tmp_path):
    save(tmp_path, 7, model_state={"w": torch.zeros(1)})
    save(tmp_path, 7, model_state={"w": torch.ones(1)})
    assert torch.equal(load_checkpoint(tmp_path).model_state["w"], torch.ones(1))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last", "step_00000007"]


def test_saving_an_older_step_never_deletes_it(tmp_path):
    for step in (10, 20):
        save(tmp_path, step, keep_last=1)
    save(tmp_path, 5, keep_last=1)  # e.g. a branch resumed from an older checkpoint
    assert load_checkpoint(tmp_path).step == 5
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*")) == ["step_00000005", "step_00000020"]


# ------------------------------------------------------------------------------------------ crashes


def test_exception_mid_save_keeps_previous(tmp_path, monkeypatch):
    save(tmp_path, 1)
    real = ckpt._write_json

    def failing(path, data):
        if path.name == "metadata.json":
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_json", failing)
    with pytest.raises(OSError, match="No space left"):
        save(tmp_path, 2)
    assert load_checkpoint(tmp_path).step == 1
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last", "step_00000001"]


def test_a_failed_resave_puts_the_old_copy_back(tmp_path, monkeypatch):
    """Re-saving a step moves the old copy aside first; if the new one then cannot take its name,
    the old copy goes back under it (under a temp name the next save's clean-up would delete it)."""
    save(tmp_path, 7, model_state={"w": torch.zeros(1)})
    real = os.rename

    def failing(src, dst):
        if Path(src).name.startswith(ckpt._TMP_PREFIX + "step_"):  # the new copy -> step_00000007
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(ckpt.os, "rename", failing)
    with pytest.raises(OSError, match="Input/output error"):
        save(tmp_path, 7, model_state={"w": torch.ones(1)})
    monkeypatch.setattr(ckpt.os, "rename", real)
    assert torch.equal(load_checkpoint(tmp_path).model_state["w"], torch.zeros(1))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last", "step_00000007"]


def test_killed_mid_save_keeps_previous_and_next_save_cleans_up(tmp_path):
    save(tmp_path, 1)
    # A real crash: the process dies (no cleanup handlers run) after the weights are written.
    script = textwrap.dedent(
        f"""
        import os, torch
        import mtm.checkpoint as ckpt
        ckpt._write_json = lambda path, data: os._exit(3)
        ckpt.save_checkpoint({str(tmp_path)!r}, 2, model_state={{"w": torch.ones(2)}}, config={{}}, metadata={{}})
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    root = tmp_path / "checkpoints"
    strays = [p.name for p in root.iterdir() if p.name.startswith(".tmp-")]
    assert len(strays) == 1 and (root / strays[0] / "model.safetensors").exists()
    assert load_checkpoint(tmp_path).step == 1  # the stray is ignored
    save(tmp_path, 3)
    assert sorted(p.name for p in root.iterdir()) == ["last", "step_00000001", "step_00000003"]


# ------------------------------------------------------------------------------------------- errors


def test_error_messages(tmp_path):
    assert data_error(tmp_path / "nope") == f"{tmp_path / 'nope'}: no such checkpoint or run directory"
    (tmp_path / "file").write_text("x")
    assert "not a directory" in data_error(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert data_error(empty) == f"{empty}: not an mtm checkpoint (missing model.safetensors)"
    (empty / "checkpoints").mkdir()
    assert data_error(empty) == f"{empty / 'checkpoints'}: no checkpoint saved yet (missing last)"

    path = save(tmp_path / "run", 1)
    (path / "model.safetensors").rename(path / "moved")
    assert data_error(path) == f"{path}: not an mtm checkpoint (missing model.safetensors)"
    (path / "moved").rename(path / "model.safetensors")

    (path / "metadata.json").write_text('{"format": "mtm-checkpoint", ')
    assert data_error(path).startswith(f"{path / 'metadata.json'}: corrupt JSON (")
    (path / "metadata.json").write_text(json.dumps({"format": "mtm-checkpoint", "format_version": 99, "step": 1}))
    assert "newer than this mtm supports" in data_error(path)
    (path / "metadata.json").write_text(json.dumps({"format": "mtm-checkpoint", "format_version": "1", "step": 1}))
    assert data_error(path) == f'{path / "metadata.json"}: missing or invalid "format_version"'
    (path / "metadata.json").write_text(json.dumps({"step": 1}))
    assert data_error(path) == f'{path / "metadata.json"}: not an mtm checkpoint (no "format": "mtm-checkpoint")'

    path = save(tmp_path / "run", 2)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert data_error(path).startswith(f"{path / 'model.safetensors'}: corrupt safetensors file (")

    last = tmp_path / "run" / "checkpoints" / "last"
    last.write_text("step_00000009\n")
    assert data_error(tmp_path / "run") == f"{last}: names step_00000009, which does not exist"
    last.write_text("../../etc\n")
    assert "corrupt, expected a name like step_00005000" in data_error(tmp_path / "run")

    with pytest.raises(DataError, match=r"has no train_state/ .*cannot resume"):
        load_checkpoint(save(tmp_path / "run", 3)).load_train_state()


# ------------------------------------------------------------------------------------ dataset identity


def test_identity_of_a_file_is_its_sha256_and_sees_same_size_same_mtime_edits(tmp_path):
    f = tmp_path / "d.hdf5"
    f.write_bytes(os.urandom(3 << 20) + b"tail")  # spans several read chunks
    ident = dataset_identity(f)
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    assert ident == {"path": str(f.resolve()), "kind": "file", "size": (3 << 20) + 4, "sha256": sha}
    stat = f.stat()
    with open(f, "r+b") as fh:  # flip one byte in place, then restore the timestamps
        fh.seek(1 << 20)
        byte = fh.read(1)
        fh.seek(1 << 20)
        fh.write(bytes([byte[0] ^ 1]))
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert dataset_identity(f)["sha256"] != ident["sha256"]


def test_identity_of_a_directory(tmp_path):
    ds = tmp_path / "minari"
    (ds / "data").mkdir(parents=True)
    (ds / "data" / "main_data.hdf5").write_bytes(b"episodes")
    (ds / "metadata.json").write_text("{}")
    ident = dataset_identity(ds)
    files = [("data/main_data.hdf5", b"episodes"), ("metadata.json", b"{}")]  # sorted, `sha256sum` lines
    manifest = "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files)
    sha = hashlib.sha256(manifest.encode()).hexdigest()
    assert ident == {"path": str(ds.resolve()), "kind": "directory", "size": 10, "files": 2, "sha256": sha}
    (ds / ".DS_Store").write_bytes(b"junk")
    assert dataset_identity(ds) == ident  # hidden files are not data
    (ds / "metadata.json").rename(ds / "meta.json")
    assert dataset_identity(ds)["sha256"] != ident["sha256"]  # names count, not only bytes
    with pytest.raises(DataError, match="no such file or directory"):
        dataset_identity(tmp_path / "missing")
    (tmp_path / "void").mkdir()
    with pytest.raises(DataError, match="directory contains no files"):
        dataset_identity(tmp_path / "void")


@pytest.mark.shared_data
def test_identity_of_shared_dataset(shared_datasets):
    ident = dataset_identity(shared_datasets / "hopper-medium-v5.hdf5")
    assert ident["size"] == (shared_datasets / "hopper-medium-v5.hdf5").stat().st_size
    assert len(ident["sha256"]) == 64
