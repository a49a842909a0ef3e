"""Issue #13: episodes that lack actions or rewards, and training on a mixture of files.

Data (readers, inspect, convert --drop, statistics), batches (presence flags, weights), masks and
loss per sample, the network, training (bit-identical on complete data, mixed files resume
exactly), evaluation, and the one-line errors of bad mixtures.
"""

import dataclasses
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from faultkit import error_line
from mtm.cli import main
from mtm.data.episode import STATE_KEY, DatasetInfo, Episode
from mtm.data.formats import open_dataset
from mtm.data.formats.native import COMPLETE_SCHEMA_VERSION, SCHEMA_VERSION, EpisodeWriter, NativeSource
from mtm.data.mixture import concat, drop_plan, labelled_first, load_training_data
from mtm.data.stats import ModalityStats
from mtm.data.trajectories import load_trajectories
from mtm.data.windows import WindowSampler
from mtm.errors import ConfigError, DataError
from mtm.model.loss import mtm_loss
from mtm.model.masks import MaskMixture, TokenLayout, hide_absent, present_tokens
from mtm.model.network import MTM, ModelConfig
from mtm.model.tokenizers import ContinuousTokenizer
from test_formats_minari import write_minari

INFO = DatasetInfo(source_format="native", source="test", env_id="Hopper-v5", ref_min_score=0.0, ref_max_score=10.0,
                   action_space={"type": "Box", "shape": [2], "dtype": "float32", "low": ["-inf"] * 2,
                                 "high": ["inf"] * 2})


def episode(t: int, seed: int, *, actions: bool = True, rewards: bool = True, obs_dim: int = 3,
            key: str = STATE_KEY, act_dim: int = 2) -> Episode:
    rng = np.random.default_rng(seed)
    term = np.zeros(t, bool)
    term[-1] = True
    # Every array is drawn whatever is kept, so an episode's values do not depend on what it lacks.
    obs = rng.normal(size=(t + 1, obs_dim)).astype(np.float32)
    acts = rng.normal(size=(t, act_dim)).astype(np.float32) + 3.0
    rews = rng.normal(size=t).astype(np.float32) + 1.0
    return Episode({key: obs}, acts if actions else None, rews if rewards else None, term, np.zeros(t, bool),
                   seed=seed)


def write(path, episodes, info=INFO):
    with EpisodeWriter(path, info) as w:
        for e in episodes:
            w.add(e)
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# A mixture: 3 labelled episodes in one file (one without rewards), 5 state-only in another.
LENGTHS_A, LENGTHS_B = [9, 7, 8], [10, 6, 9, 8, 7]


@pytest.fixture
def files(tmp_path):
    a = write(tmp_path / "labelled.hdf5", [episode(t, i, rewards=i != 1) for i, t in enumerate(LENGTHS_A)])
    b = write(tmp_path / "states.hdf5", [episode(t, 10 + i, actions=False) for i, t in enumerate(LENGTHS_B)])
    return a, b


# ---- 1. data ------------------------------------------------------------------------------------


def test_native_round_trip_of_episodes_without_actions_or_rewards(tmp_path):
    eps = [episode(5, 0), episode(4, 1, actions=False), episode(3, 2, rewards=False),
           episode(6, 3, actions=False, rewards=False)]
    path = write(tmp_path / "d.hdf5", eps)
    with NativeSource(path) as src, h5py.File(path) as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION == 2  # an older mtm says "upgrade"
        for original, i in zip(eps, range(4)):
            read = src.episode(i)
            assert read.length == original.length and src.episode_length(i) == original.length
            for name in ("actions", "rewards"):
                if getattr(original, name) is None:
                    assert getattr(read, name) is None
                else:
                    np.testing.assert_array_equal(getattr(read, name), getattr(original, name))
    complete = write(tmp_path / "c.hdf5", [episode(5, 0)])
    with h5py.File(complete) as f:
        assert f.attrs["schema_version"] == COMPLETE_SCHEMA_VERSION == 1  # readable by any mtm


def test_action_shapes_are_checked_from_the_first_episode_that_has_actions(tmp_path):
    path = write(tmp_path / "d.hdf5", [episode(5, 0, actions=False), episode(4, 1), episode(4, 2)])
    with h5py.File(path, "a") as f:
        del f["episodes/ep_000002/actions"]
        f["episodes/ep_000002/actions"] = np.zeros((4, 5), np.float32)
    with NativeSource(path) as src, pytest.raises(DataError, match="ep_000002: actions has per-step shape "
                                                                   r"\(5,\) but ep_000001 has \(2,\)"):
        for i in range(3):
            src.episode(i)


@pytest.mark.parametrize("missing", ["actions", "rewards"])
def test_minari_episodes_may_lack_actions_or_rewards(tmp_path, missing):
    root = write_minari(tmp_path / "ds", [3, 4], drop=missing)
    with open_dataset(root) as src:
        assert getattr(src.episode(1), missing) is None and src.episode(1).length == 4


@pytest.mark.parametrize("missing", ["actions", "rewards"])
def test_a_d4rl_file_without_actions_or_rewards_is_state_only_or_reward_free(tmp_path, missing):
    from test_formats_d4rl import d4rl_arrays, write_d4rl

    arrays = d4rl_arrays()
    arrays.pop(missing)
    path = write_d4rl(tmp_path / "flat.hdf5", arrays)
    with open_dataset(path) as src:
        assert all(getattr(e, missing) is None for e in src)
    data = load_trajectories(path)
    assert not data.present[missing].any() and missing not in data.stats()
    summary = json.loads(run("inspect", path, "--json").output)
    assert summary["episodes_with"][missing] == 0 and missing not in summary["modalities"]
    out = tmp_path / "native.hdf5"
    assert run("convert", path, out).exit_code == 0
    with NativeSource(out) as native:
        assert getattr(native.episode(0), missing) is None


def test_inspect_counts_the_steps_that_carry_each_modality(files, tmp_path):
    a, b = files
    mixed = write(tmp_path / "mixed.hdf5", [episode(9, 0), episode(5, 1, actions=False), episode(4, 2, rewards=False)])
    result = run("inspect", mixed, "--json")
    summary = json.loads(result.output)
    assert summary["episodes_with"] == {"observations/state": 3, "actions": 2, "rewards": 2}
    assert summary["steps_with"] == {"observations/state": 18, "actions": 13, "rewards": 14}
    rewards = [episode(9, 0).rewards.sum(dtype=np.float64), episode(5, 1).rewards.sum(dtype=np.float64)]
    assert summary["returns"]["mean"] == pytest.approx(np.mean(rewards))  # over the episodes with rewards
    report = run("inspect", mixed).output
    assert "actions             (2,)  float32   in 2 of 3 episodes, 13 of 18 steps" in report
    assert "(the 2 episodes with rewards)" in report
    states_only = run("inspect", b).output
    assert "actions             none: no episode has actions" in states_only
    assert "in " not in run("inspect", a).output.split("rewards")[0].split("actions")[1]  # complete: as before


def test_convert_drop_is_seeded_by_whole_episodes(tmp_path):
    src = write(tmp_path / "src.hdf5", [episode(4 + i % 3, i) for i in range(20)])
    out1, out2, out3 = tmp_path / "a.hdf5", tmp_path / "b.hdf5", tmp_path / "c.hdf5"
    result = run("convert", src, out1, "--drop", "actions:0.75", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "actions left out of 15 episodes (seed 3)" in result.output
    assert run("convert", src, out2, "--drop", "actions:0.75", "--seed", "3").exit_code == 0
    assert run("convert", src, out3, "--drop", "actions:0.75", "--drop", "rewards", "--seed", "4").exit_code == 0

    def flags(path, name):
        with NativeSource(path) as s:
            return np.array([s.episode(i).has(name) for i in range(len(s))]), s.info.extra

    one, extra = flags(out1, "actions")
    assert (~one).sum() == 15 and extra["dropped"] == {"actions": {"fraction": 0.75, "seed": 3, "episodes": 15}}
    np.testing.assert_array_equal(one, flags(out2, "actions")[0])  # same seed, same episodes
    np.testing.assert_array_equal(~one, drop_plan(20, {"actions": 0.75}, 3)["actions"])
    assert not np.array_equal(one, flags(out3, "actions")[0])  # another seed, others
    assert not flags(out3, "rewards")[0].any()  # rewards:1.0 = every episode
    with NativeSource(src) as s, NativeSource(out1) as d:  # what is kept is kept exactly
        for i in np.flatnonzero(one):
            np.testing.assert_array_equal(s.episode(i).actions, d.episode(i).actions)
    # never overwritten without --overwrite; a bad --drop is one line
    before = out1.read_bytes()
    assert "already exists" in error_line(run("convert", src, out1, "--drop", "actions"))
    assert out1.read_bytes() == before
    assert "can drop actions or rewards, not 'states'" in error_line(run("convert", src, tmp_path / "x.hdf5",
                                                                          "--drop", "states"))
    assert "fraction must lie in [0, 1]" in error_line(run("convert", src, tmp_path / "x.hdf5", "--drop", "actions:1.5"))
    assert not (tmp_path / "x.hdf5").exists()


def test_statistics_come_from_the_episodes_that_have_each_modality(files):
    a, b = files
    loaded = load_training_data([a, b], val_fraction=0.0)
    data = loaded.data
    eps_a = [episode(t, i, rewards=i != 1) for i, t in enumerate(LENGTHS_A)]
    eps_b = [episode(t, 10 + i, actions=False) for i, t in enumerate(LENGTHS_B)]
    stats = data.stats()
    expect_actions = np.concatenate([e.actions for e in eps_a])
    np.testing.assert_allclose(stats["actions"].mean, expect_actions.mean(0), rtol=1e-6)
    assert stats["actions"].count == sum(LENGTHS_A)
    expect_states = np.concatenate([e.observations[STATE_KEY][:-1] for e in eps_a + eps_b])
    np.testing.assert_allclose(stats["states"].mean, expect_states.mean(0), rtol=1e-5)
    rewarded = [eps_a[0], eps_a[2], *eps_b]  # the state-only file has rewards
    assert stats["rewards"].count == stats["returns"].count == sum(e.length for e in rewarded)
    np.testing.assert_allclose(stats["rewards"].mean, np.concatenate([e.rewards for e in rewarded]).mean(), rtol=1e-6)
    returns = data.episode_returns()
    assert np.isnan(returns[1]) and not np.isnan(np.delete(returns, 1)).any()
    assert returns[0] == pytest.approx(eps_a[0].rewards.sum(dtype=np.float64))
    # return-to-go where rewards exist is the same as in a file of those episodes alone
    alone = load_trajectories(write(a.parent / "alone.hdf5", [eps_a[0]]))
    np.testing.assert_array_equal(data.arrays["returns"][: LENGTHS_A[0]], alone.arrays["returns"])
    only = data.only_with(["actions"])
    assert only.num_episodes == 3 and only.present["actions"].all()


def test_a_file_of_state_only_episodes_alone_has_no_action_statistics(files):
    _, b = files
    data = load_trajectories(b)
    assert "actions" not in data.stats() and data.action_dim == 2  # the width the file's action space names


# ---- 2. batches, masks, loss --------------------------------------------------------------------


def test_batches_flag_per_sample_what_the_episode_lacks(files):
    a, b = files
    data = load_training_data([a, b], val_fraction=0.0).data
    sampler = WindowSampler(data, 4, keys=("states", "actions", "returns"))
    spans = sampler.window_spans()
    ids = torch.arange(sampler.num_windows)
    batch = sampler.windows(ids)
    episode_of = np.repeat(np.arange(data.num_episodes), np.maximum(data.lengths, 4) - 3)
    np.testing.assert_array_equal(batch["present_actions"].numpy(), data.present["actions"][episode_of])
    np.testing.assert_array_equal(batch["present_returns"].numpy(), data.present["rewards"][episode_of])
    assert spans.shape[0] == sampler.num_windows
    complete = load_trajectories(a).select([0, 2])
    assert not any(k.startswith("present_") for k in WindowSampler(complete, 4).sample(8))


def test_source_weights_draw_each_file_with_its_probability(files):
    a, b = files
    loaded = load_training_data([a, b], val_fraction=0.0)
    sampler = WindowSampler(loaded.train, 2, source_index=loaded.source_index, source_weights=[3.0, 1.0])
    batch = sampler.sample(20000, torch.Generator().manual_seed(0))
    assert batch["present_actions"].float().mean().item() == pytest.approx(0.75, abs=0.015)
    windows_a = sum(t - 1 for t in LENGTHS_A)
    ids = sampler.draw(20000, torch.Generator().manual_seed(1))
    counts = torch.bincount(ids[ids < windows_a], minlength=windows_a).float()
    assert (counts > 0).all()  # uniform within the file: every window is drawn
    assert counts.std() / counts.mean() < 0.2


def test_action_share_fills_a_chosen_share_of_each_batch_with_labelled_windows(tmp_path):
    # One partly labelled file, its labelled episodes scattered: 2 of 8 episodes have actions.
    path = write(tmp_path / "partly.hdf5", [episode(8, i, actions=i in (2, 5)) for i in range(8)])
    train = load_training_data([path], val_fraction=0.0).train
    ordered, groups = labelled_first(train)
    assert groups.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert ordered.has("actions").tolist() == [True, True] + [False] * 6
    assert sorted(ordered.episode_ids.tolist()) == sorted(train.episode_ids.tolist())  # the same episodes
    sampler = WindowSampler(ordered, 4, source_index=groups, source_weights=[0.5, 0.5])
    batch = sampler.sample(20000, torch.Generator().manual_seed(0))
    assert batch["present_actions"].float().mean().item() == pytest.approx(0.5, abs=0.015)  # not 2/8
    with pytest.raises(ConfigError, match="needs training episodes with and without actions; every"):
        labelled_first(load_trajectories(write(tmp_path / "full.hdf5", [episode(8, i) for i in range(3)])))


def test_action_share_is_checked_as_a_config_field():
    from mtm.config import RunConfig, load_config

    assert load_config(RunConfig, None, ["data.action_share=0.5"]).data.action_share == 0.5
    with pytest.raises(ConfigError, match=r"data.action_share must be in \(0, 1\) or null, got 1.0"):
        load_config(RunConfig, None, ["data.action_share=1.0"])
    with pytest.raises(ConfigError, match="weights and action_share both set"):
        load_config(RunConfig, None, ["data.action_share=0.5", "data.extra_paths=[b.hdf5]", "data.weights=[1,1]"])


def layout_and_tokenizers(window=4):
    stats = {name: ModalityStats.of(np.random.default_rng(i).normal(size=(50, d)))
             for i, (name, d) in enumerate([("states", 3), ("returns", 1), ("actions", 2)])}
    tokenizers = {name: ContinuousTokenizer.from_stats(s, 0.1, name=name) for name, s in stats.items()}
    return TokenLayout.from_tokenizers(tokenizers, window), tokenizers


def test_masks_never_show_what_an_episode_lacks_and_keep_every_task_for_the_labelled():
    layout, _ = layout_and_tokenizers()
    b = 400
    has_actions = torch.arange(b) % 3 != 0  # every third sample state-only
    has_returns = torch.arange(b) % 2 == 0
    batch = {"present_actions": has_actions, "present_returns": has_returns}
    mixture = MaskMixture({"random_autoregressive": 1, "bc": 1, "rcbc": 1, "forward_dynamics": 1,
                           "inverse_dynamics": 1})
    raw = mixture(layout, b, torch.Generator().manual_seed(0))
    visible = hide_absent(raw, layout, batch)
    actions, returns, states = layout.role("actions"), layout.role("returns"), layout.role("states")
    assert not visible[~has_actions][:, actions].any()  # never visible, per sample
    assert not visible[~has_returns][:, returns].any()
    both = has_actions & has_returns
    assert torch.equal(visible[both], raw[both])  # the labelled keep their BC/RCBC/FD/ID masks
    assert visible[has_actions][:, actions].any()
    # the rest still get a state-prediction task: some states shown, some hidden, in every row
    state_only = ~has_actions & ~has_returns
    rows = visible[state_only]
    assert not rows[:, ~states].any()
    assert rows[:, states].any(1).all() and (~rows[:, states]).any(1).sum() > 0.5 * rows.shape[0]
    # complete data: the same tensor, untouched
    assert hide_absent(raw, layout, {}) is raw and present_tokens(layout, {}) is None


def test_the_loss_never_counts_an_absent_modality_per_sample():
    layout, tokenizers = layout_and_tokenizers()
    torch.manual_seed(0)
    b, L = 4, 4
    batch = {"states": torch.randn(b, L, 3), "returns": torch.randn(b, L, 1), "actions": torch.randn(b, L, 2),
             "present_actions": torch.tensor([True, False, True, False]),
             "present_returns": torch.tensor([True, True, False, False])}
    batch["actions"][~batch["present_actions"]] = float("nan")  # placeholders could hold anything
    batch["returns"][~batch["present_returns"]] = 1e6
    out = {name: torch.randn(b, L, 1, tokenizers[name].output_dim, requires_grad=True) for name in tokenizers}
    visible = torch.ones(layout.num_tokens, dtype=torch.bool)
    total, parts = mtm_loss(out, batch, tokenizers, visible, None)
    assert torch.isfinite(total)
    # each modality's loss is the one over the samples that have it
    labelled = torch.tensor([0, 2])
    sub = {k: v[labelled] for k, v in batch.items() if not k.startswith("present_")}
    _, parts_labelled = mtm_loss({k: v[labelled] for k, v in out.items()}, sub, tokenizers, visible, None)
    assert parts["actions"].item() == pytest.approx(parts_labelled["actions"].item(), rel=1e-6)
    rewarded = torch.tensor([0, 1])
    _, parts_rewarded = mtm_loss({k: v[rewarded] for k, v in out.items()},
                                 {k: v[rewarded] for k, v in batch.items() if not k.startswith("present_")},
                                 tokenizers, visible, None)
    assert parts["returns"].item() == pytest.approx(parts_rewarded["returns"].item(), rel=1e-6)
    total.backward()
    assert (out["actions"].grad[~batch["present_actions"]] == 0).all()  # no gradient from them
    assert (out["actions"].grad[batch["present_actions"]] != 0).any()
    assert (out["returns"].grad[~batch["present_returns"]] == 0).all()
    assert (out["states"].grad != 0).any(1).any()  # states count for everyone


def test_the_network_never_reads_an_absent_modality_even_if_a_mask_shows_it():
    _, tokenizers = layout_and_tokenizers()
    model = MTM(ModelConfig(width=16, encoder_layers=1, decoder_layers=1, heads=2, dropout=0.0), tokenizers, 4).eval()
    torch.manual_seed(1)
    batch = {"states": torch.randn(2, 4, 3), "returns": torch.randn(2, 4, 1), "actions": torch.randn(2, 4, 2),
             "present_actions": torch.tensor([False, True])}
    visible = torch.ones(model.layout.num_tokens, dtype=torch.bool)  # a mask that shows everything
    before = model(batch, visible)
    changed = dict(batch, actions=batch["actions"].clone())
    changed["actions"][0] += 100.0  # sample 0 lacks actions: their values must not matter
    changed["actions"][1] += 1.0
    after = model(changed, visible)
    for name in before:
        torch.testing.assert_close(before[name][0], after[name][0], rtol=0, atol=0)
        assert not torch.equal(before[name][1], after[name][1])


# ---- 3. bad mixtures: one line, exit 1, no traceback ------------------------------------------


def tiny_train(data_args, run_dir, *extra):
    args = ["train", "--no-progress", *data_args, "--run-dir", run_dir]
    for item in ("model.width=16", "model.encoder_layers=1", "model.decoder_layers=1", "model.heads=2",
                 "train.batch_size=8", "train.val_every=0", "train.device=cpu", "train.warmup_steps=1",
                 "data.rtg_horizon=20", *extra):
        args += ["--set", item]
    return run(*args)


def test_bad_mixtures_fail_with_one_clear_line(files, tmp_path):
    a, b = files
    wide = write(tmp_path / "wide.hdf5", [episode(6, 0, obs_dim=5), episode(6, 1, obs_dim=5)])
    other = write(tmp_path / "other.hdf5", [episode(6, 0, key="proprio"), episode(6, 1, key="proprio")])
    arms = write(tmp_path / "arms.hdf5", [episode(6, 0, act_dim=4), episode(6, 1, act_dim=4)])
    cases = [
        ([a, wide], f"{wide}: states have 5 dimensions, {a} has 3; datasets trained together must come from "
                    f"the same robot"),
        ([a, other], f"{other}: shares no observation key with {a} (state)"),
        ([a, arms], f"{arms}: actions have 4 dimensions, {a} has 2"),
        ([b], f"{b}: no episode has actions"),
    ]
    for paths, expected in cases:
        run_dir = tmp_path / "run"
        result = tiny_train([x for p in paths for x in ("--data", p)], run_dir, "train.steps=2")
        assert expected in error_line(result)
        assert not run_dir.exists()
    weights = tiny_train(["--data", a, "--data", b], tmp_path / "run", "train.steps=2", "data.weights=[1.0]")
    assert "data.weights has 1 entries for 2 dataset(s)" in error_line(weights)
    no_rewards = write(tmp_path / "no-rewards.hdf5", [episode(6, i, rewards=False) for i in range(3)])
    assert "no training episode has rewards, so there is no return-to-go; train with --set tokens.use_returns=false" \
        in error_line(tiny_train(["--data", no_rewards], tmp_path / "run", "train.steps=2"))


# ---- 4. training and evaluation -----------------------------------------------------------------

# The per-step losses of the tiny run below on a complete file, as main (4c4cd8d, before #13) logged them on an AVX2 CPU with torch 2.13: the default single-file
# path must still compute exactly these.
MAIN_LOSSES = [3.016435146331787, 3.856691837310791, 3.339493751525879, 2.446174144744873, 3.0480594635009766,
               2.76758074760437]


def test_tiny_run_on_a_complete_file_trains_exactly_as_before(tmp_path):
    from mtm.config import RunConfig, load_config
    from mtm.training.loop import train

    rng = np.random.default_rng(0)
    path = tmp_path / "d.hdf5"
    with EpisodeWriter(path, DatasetInfo("native", "memory"), overwrite=True) as w:
        for t in [9, 12, 5, 10, 8, 11]:
            w.add(Episode(observations={"state": rng.normal(size=(t + 1, 3)).astype(np.float32)},
                          actions=rng.uniform(-1, 1, size=(t, 2)).astype(np.float32),
                          rewards=rng.normal(size=t).astype(np.float32),
                          terminations=np.eye(t, dtype=bool)[-1], truncations=np.zeros(t, bool)))
    cfg = load_config(RunConfig, None, [
        "model.width=16", "model.encoder_layers=1", "model.decoder_layers=1", "model.heads=2", "train.batch_size=8",
        "train.lr=1e-3", "train.warmup_steps=2", "train.val_every=0", "train.device=cpu", "train.deterministic=true",
        "train.log_every=1", "train.steps=6", "train.precision=fp32", "data.rtg_horizon=20", "data.val_fraction=0.2",
        f"data.path={path}", f"train.run_dir={tmp_path / 'run'}"])
    train(cfg, progress=False, say=None)
    losses = [json.loads(line)["train/loss"] for line in open(tmp_path / "run" / "metrics.jsonl")]
    if torch.backends.cpu.get_cpu_capability() == "AVX2" and torch.__version__.startswith("2.13"):
        assert losses == MAIN_LOSSES  # bit for bit
    else:  # other kernels round differently; the path is the same
        assert losses == pytest.approx(MAIN_LOSSES, rel=1e-4)


def test_tiny_run_on_mixed_files_resumes_exactly(files, tmp_path):
    a, b = files
    common = ["train.deterministic=true", "train.log_every=1", "train.precision=fp32", "data.val_fraction=0.25",
              "data.weights=[1.0,1.0]"]
    full = tiny_train(["--data", a, "--data", b], tmp_path / "full", "train.steps=8", "train.save_every=4",
                      "train.keep_last=0", *common)
    assert full.exit_code == 0, full.output
    # The same run as if it had stopped after checkpoint 4 (metrics past it are dropped on resume)
    shutil.copytree(tmp_path / "full", tmp_path / "half")
    shutil.rmtree(tmp_path / "half" / "checkpoints" / "step_00000008")
    (tmp_path / "half" / "checkpoints" / "last").write_text("step_00000004")
    resumed = run("train", "--no-progress", "--resume", tmp_path / "half")
    assert resumed.exit_code == 0, resumed.output

    def losses(run_dir):
        return [(r["step"], r["train/loss"], r.get("train/loss_actions"))
                for r in map(json.loads, open(run_dir / "metrics.jsonl")) if "train/loss" in r]

    assert losses(tmp_path / "half") == losses(tmp_path / "full")
    meta = json.loads(next((tmp_path / "full" / "checkpoints").glob("step_*8/metadata.json")).read_text())
    assert [d["path"] for d in meta["datasets"]] == [str(a.resolve()), str(b.resolve())]
    assert meta["stats"]["actions"]["count"] < meta["stats"]["states"]["count"]  # from the labelled only
    # a changed file is refused on resume
    b.unlink()
    write(b, [episode(t, 20 + i, actions=False) for i, t in enumerate(LENGTHS_B)])
    again = run("train", "--no-progress", "--resume", tmp_path / "half", "--set", "train.steps=12")
    assert f"{b}: dataset content differs" in error_line(again)


def test_eval_tasks_on_a_model_trained_on_partly_labelled_data(tmp_path):
    eps = [episode(12, i) for i in range(12)]
    full = write(tmp_path / "full.hdf5", eps)
    partial = tmp_path / "partial.hdf5"
    assert run("convert", full, partial, "--drop", "actions:0.75", "--seed", "1").exit_code == 0
    trained = tiny_train(["--data", partial], tmp_path / "run", "train.steps=3", "data.val_fraction=0.25",
                         "data.window=3")
    assert trained.exit_code == 0, trained.output
    meta = json.loads(next((tmp_path / "run" / "checkpoints").glob("step_*/metadata.json")).read_text())
    assert meta["split"]["train_episodes_with"]["actions"] + meta["split"]["val_episodes_with"]["actions"] == 3
    # the held-out episodes of the full file are the ones the run held out of the partial one
    result = run("eval", "--checkpoint", tmp_path / "run", "--task", "id", "--task", "fd", "--data", full,
                 "--output", tmp_path / "report.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["val_episodes"] == 3 and set(report["tasks"]) == {"id", "fd"}
    from mtm.checkpoint import load_checkpoint
    from mtm.evaluation.predictions import evaluate_predictions

    own = load_checkpoint(tmp_path / "run")
    if meta["split"]["val_episodes_with"]["actions"] == 0:
        with pytest.raises(DataError, match="no held-out episode has actions"):
            evaluate_predictions(own, tasks=("id",))
    else:  # scored only on the held-out episodes that have actions
        errors = evaluate_predictions(own, tasks=("id",))
        assert errors["tasks"]["id"]["count"] == 10 * meta["split"]["val_episodes_with"]["actions"]


def test_validation_scores_only_the_windows_that_have_the_task_modalities(files):
    from mtm.evaluation.predictions import prediction_errors

    a, b = files
    loaded = load_training_data([a, b], val_fraction=0.0)
    _, tokenizers = layout_and_tokenizers()
    model = MTM(ModelConfig(width=16, encoder_layers=1, decoder_layers=1, heads=2), tokenizers, 4)
    means = {"states": torch.zeros(3), "actions": torch.zeros(2)}
    mixed = prediction_errors(model, WindowSampler(loaded.data, 4), means)
    labelled = prediction_errors(model, WindowSampler(loaded.data.only_with(["actions"]), 4), means)
    rewarded = prediction_errors(model, WindowSampler(loaded.data.only_with(["actions", "rewards"]), 4), means)
    for task in ("bc", "fd", "id"):
        assert mixed[task]["count"] == labelled[task]["count"]
        assert mixed[task]["mse"] == pytest.approx(labelled[task]["mse"], rel=1e-5)
    assert mixed["rcbc"]["count"] == rewarded["rcbc"]["count"]


def test_prediction_tasks_without_action_history_hide_the_past_actions_of_bc_and_rcbc_only(files, monkeypatch):
    from mtm.evaluation.predictions import prediction_errors

    a, _ = files
    _, tokenizers = layout_and_tokenizers()
    model = MTM(ModelConfig(width=16, encoder_layers=1, decoder_layers=1, heads=2), tokenizers, 4)
    means = {"states": torch.zeros(3), "actions": torch.zeros(2)}
    shown = []
    predict = model.predict

    def spy(batch, visible, valid=None, **kw):
        shown.append(visible)
        return predict(batch, visible, valid, **kw)

    monkeypatch.setattr(model, "predict", spy)
    sampler = WindowSampler(load_trajectories(a), 4)  # one batch: bc, rcbc, fd, id in that order
    with_history = prediction_errors(model, sampler, means, action_history=True)
    without = prediction_errors(model, sampler, means, action_history=False)
    actions = model.layout.role("actions")
    bc, rcbc, fd, id_ = shown[4:]
    assert not bc[actions].any() and not rcbc[actions].any() and fd[actions].any() and id_[actions].any()
    assert shown[0][actions].any() and shown[1][actions].any()  # with history: the past actions are shown
    assert without["fd"]["mse"] == with_history["fd"]["mse"] and without["id"]["mse"] == with_history["id"]["mse"]


def test_concat_widens_the_placeholder_actions_of_a_file_that_names_none(files, tmp_path):
    a, _ = files
    bare = dataclasses.replace(INFO, action_space=None)
    b = write(tmp_path / "bare.hdf5", [episode(5, 0, actions=False)], info=bare)
    parts = [load_trajectories(a), load_trajectories(b)]
    assert parts[1].action_dim == 0
    joined = concat(parts)
    assert joined.action_dim == 2 and not joined.present["actions"][-1]


def test_tiny_run_hides_and_never_scores_missing_actions_in_the_training_loop(files, tmp_path, monkeypatch):
    """What the loop itself hands the loss: per sample, no action token of a state-only episode is
    visible, and the action loss is the one over the labelled samples alone."""
    import mtm.training.loop as loop
    import mtm.training.step as train_step_module  # the step the loop runs computes the loss
    from mtm.config import RunConfig, load_config

    a, b = files
    seen = []

    def spy(out, batch, tokenizers, visible, valid, **kw):
        seen.append((out, batch, tokenizers, visible, valid, kw))
        return mtm_loss(out, batch, tokenizers, visible, valid, **kw)

    monkeypatch.setattr(train_step_module, "mtm_loss", spy)
    cfg = load_config(RunConfig, None, [
        "model.width=16", "model.encoder_layers=1", "model.decoder_layers=1", "model.heads=2", "train.batch_size=32",
        "train.val_every=0", "train.device=cpu", "train.steps=3", "train.warmup_steps=1", "data.rtg_horizon=20",
        "data.val_fraction=0",
        f"data.path={a}", f"data.extra_paths=[{b}]", f"train.run_dir={tmp_path / 'run'}"])
    loop.train(cfg, progress=False, say=None)
    assert len(seen) == 3
    for out, batch, tokenizers, visible, valid, kw in seen:
        layout = TokenLayout.from_tokenizers(tokenizers, 4)
        lacking = ~batch["present_actions"]
        assert lacking.any() and (~lacking).any()
        assert not visible[lacking][:, layout.slice("actions")].any()
        assert not visible[~batch["present_returns"]][:, layout.slice("returns")].any()
        _, parts = mtm_loss(out, batch, tokenizers, visible, valid, **kw)
        keep = ~lacking
        sub = {k: v[keep] for k, v in batch.items() if not k.startswith("present_")}
        _, labelled = mtm_loss({k: v[keep] for k, v in out.items()}, sub, tokenizers, visible[keep], valid[keep], **kw)
        assert parts["actions"].item() == pytest.approx(labelled["actions"].item(), rel=1e-5)
