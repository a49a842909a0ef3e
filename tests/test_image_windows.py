import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mtm.data.episode import DatasetInfo, Episode
from mtm.data.formats import DataSource
from mtm.data.formats.native import EpisodeWriter
from mtm.data.image_windows import ImageWindows, channel_stats, first_item
from mtm.data.trajectories import load_trajectories
from mtm.data.windows import WindowSampler
from mtm.errors import DataError

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SIZE = 8
L = 4


def coded_episode(e: int, t: int) -> Episode:
    """Frame s of episode e is filled with (e, s, 7); T+1 frames, the final one included."""
    steps = np.arange(t + 1)
    frames = np.zeros((t + 1, SIZE, SIZE, 3), np.uint8)
    frames[..., 0] = e
    frames[..., 1] = steps[:, None, None]
    frames[..., 2] = 7
    state = np.stack([np.full(t + 1, e), steps], axis=1).astype(np.float32)
    return Episode({"state": state, "pixels": frames}, np.zeros((t, 2), np.float32), np.ones(t, np.float32),
                   np.zeros(t, bool), np.eye(1, t, t - 1, dtype=bool)[0])


@pytest.fixture(scope="module")
def coded_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "coded.hdf5"
    with EpisodeWriter(path, DatasetInfo(source_format="test", source="coded")) as writer:
        for e, t in enumerate([6, 2, 5, 9]):  # episode 1 is shorter than the window
            writer.add(coded_episode(e, t))
    return path


def check_frames(frames: torch.Tensor, batch: dict) -> None:
    """Every frame is the one of its window's episode and step; padding repeats the last real one."""
    episode = batch["state"][:, :, 0].long()
    step = batch["timesteps"]  # WindowSampler repeats the last real timestep on padded steps too
    assert frames.shape[1:] == (L, SIZE, SIZE, 3) and frames.dtype == torch.uint8
    assert torch.equal(frames[..., 0].long(), episode[:, :, None, None].expand(-1, -1, SIZE, SIZE))
    assert torch.equal(frames[..., 1].long(), step[:, :, None, None].expand(-1, -1, SIZE, SIZE))
    assert (frames[..., 2] == 7).all()


def test_trajectories_record_image_keys_and_spans_locate_windows(coded_file):
    data = load_trajectories(coded_file)
    assert data.image_keys == ["pixels"] and data.state_keys == ["state"]
    assert data.select([2, 0]).image_keys == ["pixels"]
    sampler = WindowSampler(data, L, keys=("states",))
    spans = sampler.window_spans()
    # Episodes of 6, 2, 5, 9 steps: 3, 1 (padded), 2 and 6 windows.
    assert spans.shape == (sampler.num_windows, 3) == (12, 3)
    np.testing.assert_array_equal(spans[:6], [[0, 0, 4], [0, 1, 4], [0, 2, 4], [1, 0, 2], [2, 0, 4], [2, 1, 4]])
    batch = sampler.windows(torch.arange(sampler.num_windows))
    np.testing.assert_array_equal(spans[:, 2], batch["valid"].sum(1).numpy())
    np.testing.assert_array_equal(spans[:, 1], batch["timesteps"][:, 0].numpy())


@pytest.mark.parametrize("frames", ["file", "memory"])
def test_frames_match_the_sampled_windows_including_padding(coded_file, frames):
    data = load_trajectories(coded_file)
    train = data.select([3, 1])  # like a split: the spans must carry source episode ids, not rows
    sampler = WindowSampler(train, L, keys=("states",))
    images = ImageWindows.for_sampler(coded_file, "pixels", sampler, frames=frames)
    assert images.in_memory == (frames == "memory")
    # the frames the windows read: episode 3's first 9 (its 10th, the final observation, is never
    # the first frame of a window's step) and episode 1's 2
    assert images.frame_bytes == (9 + 2) * SIZE * SIZE * 3
    assert images.frame_shape == (SIZE, SIZE, 3) and len(images) == sampler.num_windows
    ids = sampler.draw(32, torch.Generator().manual_seed(0))
    batch = sampler.windows(ids)
    batch["state"] = batch["states"]
    check_frames(images.windows(ids), batch)
    every = torch.arange(sampler.num_windows)
    all_windows = sampler.windows(every)
    all_windows["state"] = all_windows["states"]
    check_frames(torch.from_numpy(images.read(every.numpy())), all_windows)
    with pytest.raises(IndexError):
        images.read([sampler.num_windows])
    images.close()


def test_data_frames_auto_decodes_into_memory_where_every_key_fits(coded_file, monkeypatch):
    import mtm.data.batches as batches

    sampler = WindowSampler(load_trajectories(coded_file), L, keys=("states",))
    ids = torch.arange(sampler.num_windows)
    need = (6 + 2 + 5 + 9) * SIZE * SIZE * 3
    results = {}
    for budget, frames, held in ((need, "auto", True), (need - 1, "auto", False), (None, "auto", False),
                                 (0, "memory", True), (10**12, "file", False)):
        monkeypatch.setattr(batches, "memory_budget", lambda budget=budget: budget)
        built = batches.WindowBatches.build(sampler, DataSource(str(coded_file), "native"), ["pixels"], frames)
        assert built.images["pixels"].in_memory is held, (budget, frames)
        assert ("decoded into memory" in built.describe_frames()) is held
        results[(budget, frames)] = built.windows(ids)["pixels"]
        built.close()
    first = next(iter(results.values()))
    assert all(torch.equal(first, r) for r in results.values())  # the same bytes either way
    with pytest.raises(ValueError, match="frames must be 'memory' or 'file'"):
        ImageWindows.for_sampler(coded_file, "pixels", sampler, frames="auto")


def test_draw_is_what_sample_uses(coded_file):
    sampler = WindowSampler(load_trajectories(coded_file), L, keys=("states",))
    ids = sampler.draw(16, torch.Generator().manual_seed(5))
    sampled = sampler.sample(16, torch.Generator().manual_seed(5))
    assert torch.equal(sampled["states"], sampler.windows(ids)["states"])


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_yields_the_batches_in_order_from_any_number_of_workers(coded_file, workers):
    sampler = WindowSampler(load_trajectories(coded_file), L, keys=("states",))
    images = ImageWindows.for_sampler(coded_file, "pixels", sampler)
    batches = [sampler.draw(8, torch.Generator().manual_seed(s)) for s in range(5)]
    expected = [images.windows(ids) for ids in batches]  # the parent opens the file before any fork
    got = list(images.loader(iter(batches), num_workers=workers))
    assert len(got) == 5
    for ids, want, (got_ids, frames) in zip(batches, expected, got):
        assert torch.equal(got_ids, ids) and torch.equal(frames, want)


def test_plain_dataloader_and_pickling_open_their_own_file(coded_file):
    sampler = WindowSampler(load_trajectories(coded_file), L, keys=("states",))
    images = ImageWindows.for_sampler(coded_file, "pixels", sampler)
    batches = [list(range(s, s + 4)) for s in range(0, 8, 4)]
    expected = [images.windows(b) for b in batches]
    loader = torch.utils.data.DataLoader(images, batch_sampler=batches, num_workers=1, collate_fn=first_item)
    for (ids, frames), want, batch in zip(loader, expected, batches):
        assert ids.tolist() == batch and torch.equal(frames, want)
    clone = pickle.loads(pickle.dumps(images))
    assert clone._reader is None and torch.equal(clone.windows(batches[0]), expected[0])
    assert torch.equal(images[3], expected[0][3])
    with pytest.raises(IndexError):
        list(images.loader([[0], [len(images)]]))  # a bad id fails loudly, not as a short epoch


def test_bad_files_keys_and_spans_are_data_errors(coded_file, tmp_path):
    spans = np.array([[0, 0, 4]])
    with pytest.raises(DataError, match="no observation key 'rgb'; available: pixels, state"):
        ImageWindows(coded_file, "rgb", spans, L)
    with pytest.raises(DataError, match="not uint8"):
        ImageWindows(coded_file, "state", spans, L)
    with pytest.raises(DataError, match="name episode 9, the file has 4"):
        ImageWindows(coded_file, "pixels", np.array([[9, 0, 4]]), L)
    with pytest.raises(DataError, match="3 frames, the windows need 5"):
        ImageWindows(coded_file, "pixels", np.array([[1, 1, 4]]), L)
    with pytest.raises(DataError, match="windows of 4 steps"):
        ImageWindows(coded_file, "pixels", np.array([[0, 0, 5]]), L)
    with pytest.raises(DataError, match="no such file"):
        ImageWindows(tmp_path / "missing.hdf5", "pixels", spans, L)


def test_channel_stats_in_unit_range(coded_file):
    mean, std = channel_stats(coded_file, "pixels", max_frames=64)
    assert mean.shape == std.shape == (3,) and mean.dtype == np.float32
    assert mean[2] == pytest.approx(7 / 255) and std[2] == pytest.approx(1 / 255)  # constant: floored
    assert 0 < mean[0] < 3 / 255 and std[1] > 0
    again = channel_stats(coded_file, "pixels", max_frames=64)
    np.testing.assert_array_equal(mean, again[0])
    only = channel_stats(coded_file, "pixels", episodes=[3], max_frames=32)[0]
    assert only[0] == pytest.approx(3 / 255)


# Peak memory while reading every window of a file with ~100 MB of raw frames. The child process
# keeps the measurement clean (pytest's own peak would hide it); VmHWM is the kernel's peak RSS.
MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    from mtm.data.image_windows import ImageWindows

    def peak_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024

    path, episodes, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    spans = np.array([[e, s, 4] for e in range(episodes) for s in range(steps - 3)])
    images = ImageWindows(path, "pixels", spans, 4)
    images.read(np.arange(64))
    before = peak_mb()
    for begin in range(0, len(spans), 64):
        images.read(np.arange(begin, min(begin + 64, len(spans))))
    print(before, peak_mb())
    """
)


def test_peak_memory_stays_bounded_on_a_file_larger_than_any_cache(tmp_path):
    path = tmp_path / "big.hdf5"
    episodes, steps, size = 160, 50, 64
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (steps + 1, 16, 16, 3), dtype=np.uint8)  # some entropy per frame
    with EpisodeWriter(path, DatasetInfo(source_format="test", source="big"), image_compression_level=1) as writer:
        for e in range(episodes):
            frames = np.full((steps + 1, size, size, 3), e % 251, np.uint8)
            frames[:, :16, :16] = noise
            writer.add(Episode({"state": np.zeros((steps + 1, 1), np.float32), "pixels": frames},
                               np.zeros((steps, 1), np.float32), np.zeros(steps, np.float32),
                               np.zeros(steps, bool), np.eye(1, steps, steps - 1, dtype=bool)[0]))
    raw_mb = episodes * (steps + 1) * size * size * 3 / 2**20
    assert raw_mb > 95
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(path), str(episodes), str(steps)],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    before, after = map(float, result.stdout.split())
    # Reading the whole file once grows the peak by far less than the data (~100 MB raw).
    assert after - before < 25, (before, after, raw_mb)


def test_the_training_data_carries_its_source_and_frames_come_through_it(coded_file, tmp_path):
    from mtm.data.batches import WindowBatches
    from mtm.data.episode import FlatReader, FrameReader
    from mtm.data.formats import DataSource, open_dataset
    from mtm.data.mixture import load_training_data

    loaded = load_training_data([coded_file], format="native", val_fraction=0.0)
    source = loaded.sources[0]
    assert source == DataSource(str(coded_file), "native") and source.reads_frames
    assert loaded.paths == [str(coded_file)]
    sampler = WindowSampler(loaded.train, L, keys=("states",))
    batches = WindowBatches.build(sampler, source, ["pixels"])
    batch = batches.windows(torch.arange(4))
    check_frames(batch["pixels"], {**batch, "state": batch["states"]})
    batches.close()
    with open_dataset(coded_file) as reader:
        assert isinstance(reader, FrameReader) and not isinstance(reader, FlatReader)
    # A reader without frames() is refused with a way out, not read through another reader.
    not_framed = DataSource(str(coded_file), "d4rl")
    assert not not_framed.reads_frames
    with pytest.raises(DataError, match="the d4rl reader cannot read image frames lazily.*; convert it first"):
        ImageWindows(not_framed, "pixels", np.array([[0, 0, 4]]), L)
