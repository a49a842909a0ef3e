import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

# ../shared/datasets next to the repository: present for developers and CI, never for users.
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _take_cpu_bf16_as(monkeypatch, value: str) -> None:
    from mtm import hardware

    monkeypatch.setenv(hardware.CPU_BF16_ENV, value)
    monkeypatch.setattr(hardware, "_warned", set())


@pytest.fixture
def no_native_bf16(monkeypatch):
    """This CPU taken as one that emulates bf16 (an AVX2 CPU): `auto` resolves to fp32."""
    _take_cpu_bf16_as(monkeypatch, "emulated")


@pytest.fixture
def native_bf16(monkeypatch):
    """This CPU taken as one with native bf16 (AVX512-BF16, AMX): `auto` resolves to bf16."""
    _take_cpu_bf16_as(monkeypatch, "native")


@pytest.fixture(params=["emulated", "native"], ids=["bf16-emulated", "bf16-native"])
def either_cpu(request, monkeypatch) -> bool:
    """Runs a test under both resolutions of `auto` whatever this CPU has; True where bf16 is native."""
    _take_cpu_bf16_as(monkeypatch, request.param)
    return request.param == "native"


@pytest.fixture
def d4rl_file(tmp_path):
    """A small D4RL-layout file (Hopper-v5's env id; terminal, timeout and trailing partial episodes)."""
    from test_formats_d4rl import d4rl_arrays, write_d4rl

    return write_d4rl(tmp_path / "d4rl.hdf5", d4rl_arrays(), metadata={"env_id": b"Hopper-v5"})


@pytest.fixture
def native_file(tmp_path):
    """A small native file: a terminated episode of 5 steps and a truncated one of 3."""
    from mtm.data.formats.native import EpisodeWriter
    from test_native_format import INFO, make_episode

    path = tmp_path / "native.hdf5"
    with EpisodeWriter(path, INFO) as w:
        w.add(make_episode(5, seed=1))
        w.add(make_episode(3, seed=2, terminal=False))
    return path


@pytest.fixture
def shared_datasets() -> Path:
    if not (SHARED_DATASETS / "summary.json").exists():
        pytest.skip("../shared/datasets is not present")
    return SHARED_DATASETS


# A tiny model on a little Reacher expert data: enough to exercise policies, eval and scripts.
TINY_REACHER = ["model.width=32", "model.encoder_layers=1", "model.decoder_layers=1", "model.heads=2",
                "train.batch_size=64", "train.lr=1e-3", "train.warmup_steps=5", "train.val_every=0",
                "train.device=cpu", "data.rtg_horizon=50", "model.dropout=0.0"]


@pytest.fixture(scope="session")
def reacher_run(tmp_path_factory) -> Path:
    """A run directory trained for 40 steps on 12 Reacher-v5 episodes (expert, noise 0 and 0.3)."""
    from mtm.collect import CollectOptions, collect
    from mtm.config import RunConfig, load_config
    from mtm.training.loop import train

    root = tmp_path_factory.mktemp("reacher")
    data = root / "reacher.hdf5"
    collect(CollectOptions(env_id="Reacher-v5", policy="expert", episodes=12, output=data, num_envs=4,
                           noise=(0.0, 0.3)), progress=False)
    cfg = load_config(RunConfig, None, TINY_REACHER + [f"data.path={data}", f"train.run_dir={root / 'run'}",
                                                       "train.steps=40", "train.save_every=40"])
    train(cfg, progress=False)
    return root / "run"


def pytest_terminal_summary(terminalreporter):
    """Which way `precision: auto` resolved on this CPU (the suite must pass both ways; .ci/run runs
    the fast tier under each with MTM_CPU_BF16), and how many fault cases tests/test_faults.py tried."""
    import sys

    from mtm import hardware

    auto = "bf16" if hardware.cpu_native_bf16() else "fp32"
    terminalreporter.write_line(f"mtm: CPU path {hardware.cpu_kernel_path()}; precision auto = {auto}")
    faultkit = sys.modules.get("faultkit")
    if faultkit is not None and faultkit.TRIED:
        parts = ", ".join(f"{n} {kind}" for kind, n in faultkit.TRIED.items())
        terminalreporter.write_line(f"fault injection: {sum(faultkit.TRIED.values())} cases tried ({parts})")


# The fast inner loop: `pytest -m "not slow"` leaves out the tests below (real training runs,
# subprocesses, kill -9, whole pipelines; each takes a second or more on 2 cores). They stay in the
# default run and in CI. Listed here, in one place, by file and test-name prefix.
SLOW_TESTS = {
    "test_faults.py": ("test_kill_9_while_training", "test_kill_9_while_writing_data", "test_full_disk_while_training"),
    "test_train.py": ("test_torchrun_", "test_tiny_run_", "test_resume_after_kill_9", "test_mlp_baselines_"),
    "test_roofline.py": ("test_bench_train_",),
    "test_scripts.py": ("test_",),
    "test_write_failures.py": ("test_full_disk_under_a_file_size_limit[train]", "test_full_disk_on_a_tiny_file_system[train]",
                               "test_a_train_that_runs_out_of_space"),
    "test_image_windows.py": ("test_peak_memory_",),
    "test_network.py": ("test_learns_actions_",),
    "test_demo.py": ("test_demo_",),
    "test_checkpoint.py": ("test_killed_mid_save", "test_resume_is_bit_identical"),
    "test_run_dir.py": ("test_the_lock_dies_",),
    "test_config_docs.py": ("test_field_reference_is_current",),
    "test_policy_eval.py": ("test_evaluation_during_training", "test_eval_cli_report_video", "test_exactly_n_episodes",
                            "test_eval_cli_contact_sheet_and_video_options"),
    "test_episode_shapes.py": ("test_eval_task_on_data_of_another_size",),
    "test_images_e2e.py": ("test_",),
    "test_collect.py": ("test_ctrl_c_in_a_real_process",),
    "test_heteromodal.py": ("test_tiny_run_", "test_eval_tasks_"),
    "test_bench_beyond.py": ("test_tiny_sweep_",),
    "test_ema.py": ("test_resume_after_kill_9",),
    "test_train_progress.py": ("test_train_without_a_terminal_",),
    "test_lr_schedule.py": ("test_resume_with_more_steps_",),
    "test_planning.py": ("test_plan_end_to_end_",),
    "test_envs.py": ("test_the_headless_default_is_set_before_any_module_imports_mujoco",),
    "test_video.py": ("test_the_robot_stays_in_view_for_a_whole_episode", "test_the_free_tracking_camera_follows_too",
                      "test_a_recorded_expert_episode", "test_the_check_fails_for_the_old_fixed_view",
                      "test_pixel_observations_do_not_change"),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        prefixes = SLOW_TESTS.get(item.path.name, ())
        if item.name.startswith(prefixes):
            item.add_marker(pytest.mark.slow)
