"""Precision by hardware (mtm.hardware): auto = bf16 only where it is native; old `train.bf16` configs
load; a forced, emulated bf16 warns once; the choice is printed and saved with the run and used by
the policy."""

import numpy as np
import pytest
import torch

from mtm import hardware
from mtm.checkpoint import load_checkpoint
from mtm.config import RunConfig, load_config, parse_yaml, save_config
from mtm.errors import ConfigError
from mtm.hardware import CPU_BF16_MIN_WORK, resolve_precision
from mtm.policy import MTMPolicy, load_model


def test_auto_is_fp32_without_native_bf16(no_native_bf16):
    p = resolve_precision("auto", "cpu", warn=pytest.fail)
    assert (p.dtype, p.requested, p.native) == ("fp32", "auto", False)
    assert p.reason.startswith("auto: the CPU ") and "no native bf16" in p.reason
    with p.autocast("cpu"):
        y = torch.nn.functional.linear(torch.randn(4, 8), torch.randn(3, 8))
    assert y.dtype == torch.float32


def test_auto_is_bf16_with_native_bf16(native_bf16):
    p = resolve_precision("auto", "cpu", warn=pytest.fail)
    assert (p.dtype, p.native) == ("bf16", True)
    assert "has native bf16" in p.reason
    with p.autocast("cpu"):
        y = torch.nn.functional.linear(torch.randn(4, 8), torch.randn(3, 8))
    assert y.dtype == torch.bfloat16


def test_auto_on_cuda_asks_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda:0").dtype == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    p = resolve_precision("auto", "cuda:0")
    assert p.dtype == "fp32" and "GPU Fake GPU" in p.reason


def test_fp32_is_fp32_everywhere(native_bf16):
    assert resolve_precision("fp32", "cpu", warn=pytest.fail).dtype == "fp32"


def test_forced_bf16_without_native_support_warns_once(no_native_bf16):
    lines = []
    for _ in range(3):
        p = resolve_precision("bf16", "cpu", warn=lines.append)
        assert p.dtype == "bf16" and not p.native
    assert len(lines) == 1
    assert lines[0].startswith("warning: bf16 was asked for") and "10x slower" in lines[0]
    assert "precision auto or fp32" in lines[0]


def test_forced_bf16_with_native_support_is_quiet(native_bf16):
    assert resolve_precision("bf16", "cpu", warn=pytest.fail).dtype == "bf16"


def test_the_override_names_itself_in_the_cpu_path(monkeypatch):
    monkeypatch.setenv("MTM_CPU_BF16", "native")
    assert hardware.cpu_native_bf16() and hardware.cpu_kernel_path().endswith("bf16 taken as native (MTM_CPU_BF16)")
    monkeypatch.setenv("MTM_CPU_BF16", " Emulated ")
    assert not hardware.cpu_native_bf16() and "bf16 taken as emulated" in hardware.cpu_kernel_path()
    monkeypatch.setenv("MTM_CPU_BF16", "")  # empty: the hardware decides
    assert hardware.cpu_native_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_a_misspelt_override_is_a_config_error(monkeypatch):
    monkeypatch.setenv("MTM_CPU_BF16", "yes")
    with pytest.raises(ConfigError, match=r"MTM_CPU_BF16='yes' is not understood; set it to native or emulated"):
        resolve_precision("auto", "cpu")


def test_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", "cpu")


# --------------------------------------------------------------------------------------------------
# Configs


def test_every_builtin_config_uses_auto():
    from mtm.config import builtin_configs, resolve_config_path

    for name in builtin_configs():
        text = resolve_config_path(name).read_text()
        assert "bf16:" not in text, name
        assert load_config(RunConfig, resolve_config_path(name)).train.precision == "auto", name


@pytest.mark.parametrize("value, expected", [("true", "bf16"), ("false", "fp32")])
def test_old_config_file_with_train_bf16_loads(tmp_path, value, expected):
    path = tmp_path / "old.yaml"
    path.write_text(f"train:\n  bf16: {value}\n  steps: 10\n")
    cfg = load_config(RunConfig, path)
    assert cfg.train.precision == expected and cfg.train.steps == 10
    saved = parse_yaml(save_config(cfg, tmp_path / "config.yaml").read_text())
    assert saved["train"]["precision"] == expected and "bf16" not in saved["train"]


@pytest.mark.parametrize("value, expected", [("true", "bf16"), ("false", "fp32")])
def test_old_override_train_bf16_is_accepted(value, expected):
    assert load_config(RunConfig, None, [f"train.bf16={value}"]).train.precision == expected


def test_new_key_overrides_old_file_key(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("train:\n  bf16: true\n")
    assert load_config(RunConfig, path, ["train.precision=fp32"]).train.precision == "fp32"
    assert load_config(RunConfig, path, ["train.bf16=false"]).train.precision == "fp32"


def test_old_key_keeps_its_type_check(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.bf16: expected bool"):
        load_config(RunConfig, None, ["train.bf16=yes"])
    path = tmp_path / "old.yaml"
    path.write_text("train:\n  bf16: 1\n")
    with pytest.raises(ConfigError, match=r"train\.bf16: expected bool"):
        load_config(RunConfig, path)


def test_precision_typo_is_reported_with_the_choices():
    with pytest.raises(ConfigError, match=r"train\.precision: expected one of 'auto', 'fp32', 'bf16', got 'bf61'"):
        load_config(RunConfig, None, ["train.precision=bf61"])


# --------------------------------------------------------------------------------------------------
# Training and the policy


def test_training_prints_and_saves_the_precision(no_native_bf16, tmp_path):
    from tests.test_train import TINY, write_linear_system
    from mtm.training.loop import train

    data = write_linear_system(tmp_path / "d.hdf5", episodes=6, length=12)
    cfg = load_config(RunConfig, None, TINY + [f"data.path={data}", f"train.run_dir={tmp_path / 'run'}",
                                               "train.steps=2", "train.warmup_steps=1", "train.val_every=0"])
    said = []
    train(cfg, progress=False, say=said.append)
    assert said[0].startswith("device cpu, precision fp32 (auto: the CPU ")  # the first line; paths and steps follow
    assert f"{torch.get_num_threads()} thread" in said[0] and "OMP_WAIT_POLICY=" in said[0]
    runtime = load_checkpoint(tmp_path / "run").metadata["runtime"]
    assert runtime["precision"]["dtype"] == "fp32" and runtime["precision"]["requested"] == "auto"
    assert runtime["device"] == "cpu" and runtime["threads"] == torch.get_num_threads()
    assert runtime["cpu"].startswith(torch.backends.cpu.get_cpu_capability())
    assert "bf16 taken as emulated (MTM_CPU_BF16)" in runtime["cpu"]


def test_policy_follows_the_same_rule(reacher_run, no_native_bf16):
    ck = load_checkpoint(reacher_run)
    model = load_model(ck)
    obs = np.random.default_rng(0).normal(size=(3, model.tokenizers["states"].dim)).astype(np.float32)
    auto = MTMPolicy(model, ck.metadata, num_envs=3, mode="bc", precision="auto")
    assert auto.precision.dtype == "fp32"
    forced = MTMPolicy(model, ck.metadata, num_envs=3, mode="bc", precision="bf16")
    assert forced.precision.dtype == "bf16"
    a32, a16 = auto.act(obs), forced.act(obs)
    assert a16.dtype == np.float32 and np.isfinite(a16).all()
    assert np.abs(a32 - a16).max() < 0.05  # bf16 keeps ~3 significant digits
    assert not np.array_equal(a32, a16)  # it really ran in bf16


def test_auto_keeps_fp32_for_small_forward_passes_on_a_cpu(native_bf16):
    small = resolve_precision("auto", "cpu", work=60 * 128 ** 2, warn=pytest.fail)  # `small`, 10 envs: 60 token rows
    assert small.dtype == "fp32" and small.native
    assert small.reason.endswith(f"forward passes of 983,040 rows x width^2 (bf16 pays from {CPU_BF16_MIN_WORK:,}) "
                                 f"are too small for bf16 to pay")
    assert resolve_precision("auto", "cpu", work=600 * 128 ** 2, warn=pytest.fail).dtype == "bf16"  # 100 envs
    assert resolve_precision("auto", "cpu", work=12 * 512 ** 2, warn=pytest.fail).dtype == "bf16"  # reference, 1 env
    assert resolve_precision("auto", "cpu", warn=pytest.fail).dtype == "bf16"  # training: no size given
    assert resolve_precision("bf16", "cpu", work=8 ** 2, warn=pytest.fail).dtype == "bf16"  # asked for: as asked


def test_an_mlp_policy_counts_its_steps_and_layers_not_the_tokens_of_a_window(native_bf16):
    """act() of a 3-layer MLP-BC, 256 wide, window 4: bf16 ran 0.72-0.83x fp32's speed at 10 envs
    and 1.3x at 100 (BENCHMARKS.md); the token measure (12 tokens a window) took bf16 at both."""
    from mtm.config import RunConfig, load_config, resolve_config_path
    from mtm.model.build import build_model
    from mtm.model.tokenizers import ContinuousTokenizer

    cfg = load_config(RunConfig, resolve_config_path("mlp-bc"))
    toks = {"states": ContinuousTokenizer(11, np.zeros(11), np.ones(11), name="states"),
            "actions": ContinuousTokenizer(3, np.zeros(3), np.ones(3), name="actions")}
    model = build_model(cfg.model, toks, cfg.data.window)
    assert model.inference_work(10) == 10 * 4 * 256 ** 2 * 3 // 12
    assert resolve_precision("auto", "cpu", work=model.inference_work(10), warn=pytest.fail).dtype == "fp32"
    assert resolve_precision("auto", "cpu", work=model.inference_work(100), warn=pytest.fail).dtype == "bf16"


def test_auto_on_a_gpu_ignores_the_size(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", "cuda:0", work=8 ** 2).dtype == "bf16"


def test_a_policy_acts_in_fp32_and_plans_in_bf16_where_bf16_is_native(reacher_run, native_bf16):
    ck = load_checkpoint(reacher_run)
    model = load_model(ck)
    policy = MTMPolicy(model, ck.metadata, num_envs=10, mode="plan", plan_candidates=64)
    assert policy.precision.dtype == "fp32"  # 10 windows of 12 tokens, 32 wide: 120 x 32^2
    assert policy.planner.precision.dtype == "bf16"  # 640 windows: 7,680 x 32^2
    few = MTMPolicy(model, ck.metadata, num_envs=10, mode="plan", plan_candidates=8)
    assert few.planner.precision.dtype == "fp32"  # 960 x 32^2 is below the 2^21 where bf16 pays
    obs = np.random.default_rng(0).normal(size=(10, model.tokenizers["states"].dim)).astype(np.float32)
    assert np.isfinite(policy.act(obs)).all()


# --------------------------------------------------------------------------------------------------
# Threads


def _wait_policy_after_cli_import(env_value):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    code = "import os, sys, mtm.cli; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_cli_makes_openmp_wait_passively_before_torch_loads():
    assert _wait_policy_after_cli_import(None) == ["PASSIVE", "False"]


def test_cli_keeps_the_users_wait_policy():
    assert _wait_policy_after_cli_import("ACTIVE") == ["ACTIVE", "False"]


def test_thread_summary_says_the_count_and_where_it_came_from(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    n = torch.get_num_threads()
    assert hardware.thread_summary() == f"{n} thread{'s' if n != 1 else ''} (OMP_WAIT_POLICY=PASSIVE)"
    monkeypatch.setenv("OMP_NUM_THREADS", str(n))
    assert "from OMP_NUM_THREADS" in hardware.thread_summary()


def test_device_choices_are_listed_once_for_both_commands():
    from mtm.cli.eval_command import eval_command
    from mtm.cli.train_command import train_command

    for command in (eval_command, train_command):
        option = next(p for p in command.params if p.name == "device")
        assert tuple(option.type.choices) == hardware.DEVICE_CHOICES
    assert hardware.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'tpu'; choose one of auto, cuda, cpu, mps"):
        hardware.resolve_device("tpu")


def test_the_eval_report_gives_the_precision_of_the_policy_that_ran(reacher_run, native_bf16):
    from mtm.evaluation import evaluate_checkpoint

    report = evaluate_checkpoint(load_checkpoint(reacher_run), episodes=3, num_envs=2)
    assert report["precision"]["dtype"] == "fp32"
    assert "passes of 24,576 rows x width^2 (bf16 pays from 2,097,152)" in report["precision"]["reason"]  # 2 envs x 12 tokens x 32^2
