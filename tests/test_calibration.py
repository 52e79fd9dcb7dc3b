"""Calibration readers, the streaming collector and the threshold methods."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from onnxslim import InputDataError
from onnxslim.calibration import (
    StatisticsCache,
    StatisticsCollector,
    StreamingHistogram,
    TensorStatistics,
    augment_with_statistics,
    collect_statistics,
    compute_range,
    entropy_threshold,
)
from onnxslim.calibration._collector import PHASE_INPUT
from onnxslim.calibration._thresholds import _abs_histogram
from onnxslim.inputs import (
    ImageFolderReader,
    ImagePreprocessing,
    IterableReader,
    NpyFolderReader,
    NpzReader,
    RandomReader,
    open_reader,
)

MODEL_TEXT = """
<ir_version: 8, opset_import: ["" : 13]>
agraph (float[N, 3, 4, 4] x) => (float[N, 3, 4, 4] y) {
    two = Constant <value = float {2.0}> ()
    scaled = Mul (x, two)
    y = Relu (scaled)
}
"""


@pytest.fixture
def model() -> ir.Model:
    return ir.from_proto(onnx.parser.parse_model(MODEL_TEXT))


def samples(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, 4, 4)).astype(np.float32)


# -- readers ----------------------------------------------------------------------------------
def test_npz_reader_batches_limit_and_ort_protocol(tmp_path, model):
    data = samples(10)
    np.savez(tmp_path / "calib.npz", x=data)
    reader = open_reader(tmp_path / "calib.npz", model, batch_size=4, limit=9)
    assert isinstance(reader, NpzReader)
    reader.validate(model)
    sizes = [len(b["x"]) for b in reader]
    assert sizes == [4, 4, 1]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in reader]), data[:9])
    # Re-iterable, and ORT's get_next/rewind protocol.
    first = reader.get_next()
    np.testing.assert_array_equal(first["x"], data[:4])
    reader.get_next(), reader.get_next()
    assert reader.get_next() is None
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["x"], data[:4])


def test_wrong_name_dtype_shape_fail_before_work(tmp_path, model):
    np.savez(tmp_path / "name.npz", image=samples(2))
    with pytest.raises(
        InputDataError, match=r"input 'image' is not an input of the model \(expected inputs: x\)"
    ):
        NpzReader(tmp_path / "name.npz").validate(model)
    np.savez(tmp_path / "dtype.npz", x=samples(2).astype(np.float64))
    with pytest.raises(
        InputDataError, match=r"input 'x' expected float32 \[Nx3x4x4\], given float64 \[1x3x4x4\]"
    ):
        NpzReader(tmp_path / "dtype.npz").validate(model)
    np.savez(tmp_path / "shape.npz", x=np.zeros((2, 3, 5, 4), np.float32))
    with pytest.raises(
        InputDataError, match=r"input 'x' expected float32 \[Nx3x4x4\], given float32 \[1x3x5x4\]"
    ):
        NpzReader(tmp_path / "shape.npz").validate(model)
    with pytest.raises(InputDataError, match="calibration data not found"):
        open_reader(tmp_path / "missing.npz", model)


def test_npy_folder_one_sample_per_file(tmp_path, model):
    data = samples(5)
    for index, sample in enumerate(data):
        np.save(tmp_path / f"{index:03d}.npy", sample)
    reader = open_reader(tmp_path, model, batch_size=2)
    assert isinstance(reader, NpyFolderReader)
    reader.validate(model)
    batches = list(reader)
    assert [len(b["x"]) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), data)


def test_npy_folder_of_stacked_batches(tmp_path, model):
    data = samples(6)
    np.save(tmp_path / "a.npy", data[:4])
    np.save(tmp_path / "b.npy", data[4:])
    reader = open_reader(tmp_path, model, batch_size=3)
    assert [len(b["x"]) for b in reader] == [3, 3]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in reader]), data)


def test_image_folder_with_declared_preprocessing(tmp_path):
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    pil.fromarray(pixels).save(tmp_path / "img.png")
    preprocessing = ImagePreprocessing(
        crop=(4, 6), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), layout="NHWC"
    )
    reader = ImageFolderReader(tmp_path, preprocessing, input_name="image")
    (batch,) = list(reader)
    expected = (pixels[1:5, 1:7].astype(np.float32) / 255.0 - 0.5) / 0.25
    assert batch["image"].shape == (1, 4, 6, 3)
    np.testing.assert_allclose(batch["image"][0], expected, rtol=1e-6, atol=1e-6)
    nchw = ImageFolderReader(tmp_path, ImagePreprocessing(resize=(3, 4), channels="BGR"))
    (batch,) = list(nchw)
    assert batch["input"].shape == (1, 3, 3, 4) and batch["input"].dtype == np.float32


def test_image_folder_reads_npy_pixels(tmp_path):
    pixels = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    np.save(tmp_path / "img.npy", pixels)
    (batch,) = list(ImageFolderReader(tmp_path, ImagePreprocessing(scale=1.0)))
    np.testing.assert_array_equal(batch["input"][0], pixels.transpose(2, 0, 1).astype(np.float32))


def test_iterables_of_dicts_arrays_and_torch_dataloader(model):
    data = samples(6)
    dicts = IterableReader([{"x": s} for s in data], batch_size=4)
    assert [len(b["x"]) for b in dicts] == [4, 2]
    arrays = open_reader(list(data), model, batch_size=3)
    arrays.validate(model)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in arrays]), data)
    torch = pytest.importorskip("torch")
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(data), torch.zeros(6))
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    reader = open_reader(loader, model, batch_size=2, limit=5)
    reader.validate(model)
    batches = list(reader)
    assert [len(b["x"]) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), data[:5])
    assert len(list(reader)) == 3  # re-iterable


def test_random_reader_is_labelled_smoke(model):
    reader = open_reader("random:3", model)
    assert isinstance(reader, RandomReader) and reader.smoke
    assert "smoke" in reader.kind
    batches = list(reader)
    assert len(batches) == 3 and batches[0]["x"].shape == (1, 3, 4, 4)
    assert reader.fingerprint() == open_reader("random:3", model).fingerprint()


def test_fixed_batch_model_needs_matching_batch_size():
    fixed = ir.from_proto(onnx.parser.parse_model(MODEL_TEXT.replace("[N,", "[2,")))
    reader = IterableReader([{"x": s} for s in samples(4)], batch_size=1)
    with pytest.raises(InputDataError, match="input 'x' has a fixed batch of 2, batch_size is 1"):
        reader.validate(fixed)


# -- collector ---------------------------------------------------------------------------------
def test_histogram_merges_exactly_as_the_range_grows():
    rng = np.random.default_rng(1)
    stats = TensorStatistics("t")
    chunks = [rng.standard_normal(5000) * (1 + i) + i for i in range(12)]
    for chunk in chunks:
        stats.update(chunk.astype(np.float32))
    data = np.concatenate(chunks).astype(np.float32)
    assert stats.minimum == data.min() and stats.maximum == data.max()
    assert stats.histogram.counts.sum() == data.size
    reference, _ = np.histogram(data.astype(np.float64), bins=stats.histogram.edges)
    # Values on a bin edge may land on either side after float32 rounding.
    assert np.abs(reference - stats.histogram.counts).sum() <= 4


def test_a_huge_outlier_after_the_anchor_widens_the_grid_without_overflow():
    """A value near float32's maximum in a later batch (a fuzzed calibration sample): the width
    is the lattice's smallest that fits it, as doubling one step at a time would find, without
    binning 3e38 at the first batch's width (that overflowed float32)."""
    from onnxslim.calibration._histogram import bin_of

    values = samples(4).reshape(-1)
    histogram = StreamingHistogram(64)
    histogram.update(values)
    base = histogram.width
    histogram.update(np.array([2.0879974e38, -1.0], np.float32))
    width, bins = histogram.width, histogram.bins
    assert math.frexp(width / base)[0] == 0.5  # base times a power of two
    assert bin_of(2.0879974e38, width) - bin_of(float(values.min()), width) < bins
    assert bin_of(2.0879974e38, width / 2) - bin_of(float(values.min()), width / 2) >= bins
    assert histogram.counts.sum() == values.size + 2
    assert histogram.counts[bin_of(2.0879974e38, width) - histogram.offset] == 1


def test_retained_state_is_flat_in_sample_count():
    rng = np.random.default_rng(2)
    few, many = StatisticsCollector(["a", "b"]), StatisticsCollector(["a", "b"])
    for index in range(200):
        batch = {"a": rng.standard_normal(256) * (index + 1), "b": rng.random(256)}
        if index < 5:
            few.update(batch)
        many.update(batch)
    assert many.samples == 200 and few.samples == 5
    assert many.retained_bytes() == few.retained_bytes()
    assert many.retained_bytes() < 2 * (2048 * 8 + 1024)


def test_collect_statistics_runs_ort_batch_by_batch(model):
    data = samples(7)
    reader = IterableReader([{"x": s} for s in data], batch_size=3)
    collector = collect_statistics(model, ["x", "scaled", "y"], reader, bins=64)
    assert collector.samples == 7
    assert collector.tensors["scaled"].minimum == pytest.approx(2 * data.min())
    assert collector.tensors["y"].maximum == pytest.approx(2 * data.max())
    assert collector.tensors["y"].minimum == 0.0
    assert collector.tensors["x"].histogram.counts.sum() == data.size


def test_in_graph_sampling_matches_numpy_strided_samples(model):
    # 3 samples x 48 elements = 144 per batch; cap 20 -> stride 144 // 20 + 1 = 8, phase = batch.
    data = samples(9, seed=3)
    reader = IterableReader([{"x": s} for s in data], batch_size=3)
    collector = collect_statistics(model, ["scaled"], reader, bins=64, sample_cap=20)
    stats = collector.tensors["scaled"]
    batches = [2 * data[i : i + 3].reshape(-1) for i in range(0, 9, 3)]
    expected = np.concatenate([b[i % 8 :: 8] for i, b in enumerate(batches)])
    assert (stats.minimum, stats.maximum) == (2 * data.min(), 2 * data.max())
    assert stats.elements == 9 * 48 and stats.batches == 3
    assert stats.histogram.counts.sum() == expected.size == 3 * 18
    reference, _ = np.histogram(expected.astype(np.float64), bins=stats.histogram.edges)
    assert np.abs(reference - stats.histogram.counts).sum() <= 2


def test_histograms_binned_several_batches_at_once_equal_batch_by_batch(model, monkeypatch):
    """The stream bins small tensors' samples of many batches in one update: the counts, grid
    and ranges equal binning each batch as it comes (the range grows over the batches here,
    so the grid doubles and moves on the way)."""
    from onnxslim.calibration._histogram import DeferredBinning
    from tests.test_calibration_distributed import assert_same_statistics

    rng = np.random.default_rng(5)
    data = [s * np.float32(k) for s, k in zip(samples(40, seed=7), rng.uniform(0.1, 30.0, 40))]
    data[3][0, 0, 0] = -400.0  # a far outlier after the anchoring batch
    names = ["x", "scaled", "y"]

    def collected():
        reader = IterableReader([{"x": s} for s in data], batch_size=2)
        return collect_statistics(model, names, reader, bins=64)

    calls = []
    update = StreamingHistogram.update
    monkeypatch.setattr(
        StreamingHistogram, "update", lambda h, v, *a: calls.append(v.size) or update(h, v, *a)
    )
    batched = collected()
    batched_calls = len(calls)
    monkeypatch.setattr(DeferredBinning, "take", lambda *a: False)
    calls.clear()
    one_by_one = collected()
    assert (batched_calls, len(calls)) == (3 + 3, 3 * 20)  # batch 0 alone, then all at once
    assert_same_statistics(batched, one_by_one, names)  # ranges, grids and counts
    for name in names:
        a, b = batched.tensors[name], one_by_one.tensors[name]
        assert (a.average_minimum, a.average_maximum) == (b.average_minimum, b.average_maximum)
        assert a.histogram.grid() == b.histogram.grid()
        assert a.histogram.counts.sum() == 40 * 48


def test_augmented_graph_fetches_only_reductions_and_capped_samples(model):
    augmented, fetched = augment_with_statistics(model, ["scaled", "y"], sample_cap=10)
    assert set(fetched) == {"scaled", "y"} and all(len(group) == 4 for group in fetched.values())
    # Reductions sit right after their producer, not at the end of the graph.
    order = [node.op_type for node in augmented.graph]
    assert order.index("ReduceMin") < order.index("Relu")
    import onnxruntime as ort

    session = ort.InferenceSession(ir.to_proto(augmented).SerializeToString())
    feeds = {"x": samples(5), PHASE_INPUT: np.array([0], np.int64)}
    low, high, size, sample = session.run(list(fetched["y"]), feeds)
    y = np.maximum(2 * feeds["x"], 0).reshape(-1)
    assert (float(low), float(high), int(size)) == (y.min(), y.max(), 240)
    np.testing.assert_array_equal(sample, y[:: 240 // 10 + 1])


def test_statistics_cache_roundtrip(tmp_path, model):
    collector = collect_statistics(
        model, ["scaled"], IterableReader([{"x": s} for s in samples(3)])
    )
    cache = StatisticsCache(tmp_path)
    key = cache.key("model", "data", ["scaled"], 2048)
    assert cache.load(key) is None
    cache.store(key, collector)
    loaded = cache.load(key)
    assert loaded.samples == 3
    original, restored = collector.tensors["scaled"], loaded.tensors["scaled"]
    assert (restored.minimum, restored.maximum) == (original.minimum, original.maximum)
    np.testing.assert_array_equal(restored.histogram.counts, original.histogram.counts)
    assert compute_range(restored, "percentile") == compute_range(original, "percentile")
    assert cache.key("model", "other data", ["scaled"], 2048) != key


# -- threshold methods on known distributions --------------------------------------------------
def _stats(values: np.ndarray, bins: int = 2048) -> TensorStatistics:
    stats = TensorStatistics("t")
    stats.histogram.__init__(bins)
    for chunk in np.array_split(values.astype(np.float32), 8):
        stats.update(chunk)
    return stats


def test_minmax_and_moving_average():
    values = np.linspace(-3.0, 5.0, 1001)
    stats = _stats(values)
    assert compute_range(stats, "minmax") == (pytest.approx(-3.0), pytest.approx(5.0))
    low, high = compute_range(stats, "minmax", moving_average=True)
    chunks = np.array_split(values.astype(np.float32), 8)
    expected_low, expected_high = float(chunks[0].min()), float(chunks[0].max())
    for chunk in chunks[1:]:  # exponential moving average of per-batch extrema, constant 0.01
        expected_low += 0.01 * (float(chunk.min()) - expected_low)
        expected_high += 0.01 * (float(chunk.max()) - expected_high)
    assert (low, high) == (pytest.approx(expected_low), pytest.approx(expected_high))


def test_percentile_matches_quantiles_of_a_normal():
    values = np.random.default_rng(3).standard_normal(400_000)
    stats = _stats(values)
    low, high = compute_range(stats, "percentile", percentile=99.9)
    width = stats.histogram.width
    assert high == pytest.approx(np.quantile(values, 0.9995), abs=width)
    assert low == pytest.approx(np.quantile(values, 0.0005), abs=width)
    assert high == pytest.approx(3.2905, abs=0.05)  # analytic: normal ppf(0.9995)


def test_percentile_keeps_zero_low_for_relu_outputs():
    values = np.maximum(np.random.default_rng(4).standard_normal(100_000), 0)
    low, high = compute_range(_stats(values), "percentile", percentile=99.99)
    assert low == 0.0 and 3.0 < high < values.max() + 1e-6


def _kl_brute_force(counts: np.ndarray, levels: int, candidates: np.ndarray) -> int:
    """One candidate at a time, the textbook way; returns the best bin count."""
    best, best_kl = None, np.inf
    for i in candidates:
        p = counts[:i].astype(np.float64).copy()
        p[i - 1] += counts[i:].sum()
        kept = counts[:i].astype(np.float64)
        q = np.zeros(i)
        edges = [(j * levels) // i for j in range(i)]
        for level in range(levels):
            members = [j for j in range(i) if edges[j] == level]
            support = [j for j in members if kept[j] > 0]
            if support:
                mass = kept[members].sum()
                for j in support:
                    q[j] = mass / len(support)
        mask = p > 0
        pn, qn = p / p.sum(), q / q.sum()
        qn[mask & (qn == 0)] = 1e-12
        kl = np.sum(pn[mask] * np.log(pn[mask] / qn[mask]))
        if kl < best_kl:
            best, best_kl = i, kl
    return best


def test_entropy_threshold_equals_brute_force_kl():
    values = np.abs(np.random.default_rng(5).laplace(size=50_000))
    counts, _ = np.histogram(values, bins=300, range=(0, values.max()))
    width = values.max() / 300
    levels = 32
    threshold = entropy_threshold(counts, width, levels=levels, stride=1)
    best = _kl_brute_force(counts, levels, np.arange(levels, 301))
    assert threshold == pytest.approx(best * width)
    assert threshold < 0.8 * values.max()  # a heavy tail is clipped


def test_entropy_keeps_the_whole_range_of_a_uniform():
    values = np.random.default_rng(6).uniform(-1, 1, 200_000)
    low, high = compute_range(_stats(values), "entropy")
    assert high == pytest.approx(1.0, abs=0.02) and low == pytest.approx(-1.0, abs=0.02)


def test_entropy_on_default_bins_does_not_return_minmax():
    values = np.random.default_rng(7).standard_normal(200_000)
    stats = _stats(values)
    counts, width = _abs_histogram(stats)
    assert counts.sum() == values.size
    low, high = compute_range(stats, "entropy")
    assert 2.0 < high < 0.9 * values.max() and low == pytest.approx(-high)


def _actual_mse(values: np.ndarray, low: float, high: float, levels: int = 255) -> float:
    step = (high - low) / levels
    clipped = np.clip(values, low, high)
    return float(np.mean((values - (np.round((clipped - low) / step) * step + low)) ** 2))


def test_mse_range_matches_brute_force_on_samples():
    values = np.random.default_rng(8).laplace(size=200_000)
    stats = _stats(values)
    low, high = compute_range(stats, "mse")
    magnitude = np.abs(values).max()
    grid = np.linspace(magnitude / 256, magnitude, 256)
    brute = min(_actual_mse(values, max(values.min(), -t), min(values.max(), t)) for t in grid)
    assert _actual_mse(values, low, high) <= 1.05 * brute
    # Analytic optimum for Laplace(b=1) at 8 bits (Banner et al., ACIQ): alpha = 9.89 b.
    assert high == pytest.approx(9.89, rel=0.05) and high < 0.85 * magnitude
    uniform = np.random.default_rng(9).uniform(0, 4, 100_000)
    assert compute_range(_stats(uniform), "mse")[1] == pytest.approx(4.0, rel=0.02)


def test_entropy_ignores_a_spike_of_exact_zeros():
    # ReLU output: the same positive half-normal with and without 60% exact zeros.
    rng = np.random.default_rng(7)
    positive = np.abs(rng.standard_normal(200_000)).astype(np.float32)
    with_zeros = np.concatenate([positive, np.zeros(300_000, np.float32)])
    _, plain = compute_range(_stats(positive), "entropy")
    low, spiked = compute_range(_stats(with_zeros), "entropy")
    assert low == 0.0 and spiked == pytest.approx(plain, rel=0.1)
    assert spiked > 0.5 * positive.max()


def test_batches_are_views_of_a_chunk_and_cross_chunk_boundaries_in_order(tmp_path):
    from onnxslim.inputs import NpyFolderReader, open_reader

    np.savez(tmp_path / "data.npz", x=np.arange(10, dtype=np.float32).reshape(10, 1))
    reader = open_reader(str(tmp_path / "data.npz"), None, batch_size=3)
    batches = [b["x"] for b in reader]
    assert [b[:, 0].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    # inside the file's one chunk a batch is a slice of it, not a copy of the remaining samples
    assert all(np.shares_memory(b, batches[0].base) for b in batches)
    folder = tmp_path / "chunks"
    folder.mkdir()
    for index, (start, stop) in enumerate([(0, 2), (2, 5), (5, 6), (6, 10)]):
        np.savez(folder / f"{index}.npz", x=np.arange(start, stop, dtype=np.float32)[:, None])
    mixed = NpyFolderReader(folder, batch_size=4, stacked=True)  # each file holds a batch
    assert [b["x"][:, 0].tolist() for b in mixed] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
