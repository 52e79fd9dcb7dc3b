"""StructuredPrune on CNNs exported from torch: MACs reduction vs ORT CPU latency speedup.

For a ResNet-style (digits-sized, widths 32/64/128) and a MobileNetV2-style model, prunes the
exported ONNX graph at channel ratios 0.25/0.5/0.75 with and without ``round_to=8``, and at
``target_macs=0.5``; when ``torch-pruning`` is installed, also prunes the torch module with
Torch-Pruning (group L2, its default: no rounding) at the same MACs target and exports it.
All models are timed side by side in one process: interleaved rounds, median of the per-round
means, ORT sessions with spinning off.

    python benchmarks/prune_cnn.py [--models resnet,mobilenetv2] [--threads 1] [--rounds 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import onnxslim
import onnxslim.testing
from onnxslim.formatting import json_safe
from onnxslim.passes.pruning import StructuredPrune, analyze, cpu_channel_block

logger = logging.getLogger("prune_cnn")


def _models():
    import torch

    torch.manual_seed(0)
    return {
        "resnet": (onnxslim.testing.resnet_style(1, 10, (32, 64, 128), 2), (1, 1, 32, 32)),
        "mobilenetv2": (onnxslim.testing.mobilenetv2_style(10, width=1.0), (1, 3, 128, 128)),
    }


def _randomize_bn(module) -> None:
    import torch

    for layer in module.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.weight.data.uniform_(0.2, 1.0)
            layer.running_var.data.uniform_(0.5, 1.5)


def _macs(path: Path) -> int:
    return analyze(onnxslim.load(path)).base_macs


def _conv_widths(path: Path) -> list[int]:
    model = onnxslim.load(path)
    widths = []
    for node in model.graph:
        if node.op_type == "Conv" and node.attributes.get_int("group", 1) == 1:
            widths.append(int(node.inputs[1].shape[0]))
    return widths


def _prune_onnx(source: Path, target: Path, **options) -> dict:
    model = onnxslim.load(source)
    result = StructuredPrune(**options)(model)
    onnxslim.save(model, target)
    return result.summary


def _torch_pruning(module, shape, target_fraction: float, path: Path) -> float | None:
    """Torch-Pruning at the ratio whose MACs come closest to the target fraction (binary search)."""
    try:
        import torch
        import torch_pruning as tp
    except ImportError:
        return None
    example = torch.randn(*shape)
    base, _ = tp.utils.count_ops_and_params(module, example)
    low, high, best = 0.0, 0.95, None
    for _ in range(12):
        ratio = (low + high) / 2
        candidate = copy.deepcopy(module)
        classifier = [m for m in candidate.modules() if isinstance(m, torch.nn.Linear)]
        pruner = tp.pruner.MetaPruner(
            candidate,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=classifier,
        )
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(candidate, example)
        if macs / base > target_fraction:
            low = ratio
        else:
            high, best = ratio, candidate
    if best is None:
        return None
    onnxslim.testing.export_torch(best, (example,), path, input_names=["x"])
    return high


def _time(
    paths: dict[str, Path], shape, threads: int, rounds: int, seconds_per_round: float
) -> dict[str, float]:
    """Median over interleaved rounds of the mean latency (ms) per model."""
    options = onnxslim.session_options(intra_op_threads=threads, allow_spinning=False)
    sessions = {name: onnxslim.create_session(path, "cpu", options) for name, path in paths.items()}
    feed = {"x": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    for session in sessions.values():
        for _ in range(5):
            session.run(None, feed)
    samples: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds_per_round:
                session.run(None, feed)
                count += 1
            samples[name].append((time.perf_counter() - start) / count * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def run(
    models: list[str], ratios: list[float], threads: int, rounds: int, seconds_per_round: float
) -> list[dict]:
    rows = []
    builders = _models()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for name in models:
            module, shape = builders[name]
            _randomize_bn(module)
            source = onnxslim.testing.export_torch(
                module, (_tensor(shape),), folder / f"{name}.onnx", input_names=["x"]
            )
            variants: dict[str, Path] = {"original": source}
            for ratio in ratios:
                for round_to in (1, 8, 16):
                    path = folder / f"{name}_r{ratio}_rt{round_to}.onnx"
                    _prune_onnx(source, path, ratio=ratio, round_to=round_to)
                    variants[f"onnxslim ratio={ratio} round_to={round_to}"] = path
            path = folder / f"{name}_macs50.onnx"
            for round_to in (8, 16):
                path = folder / f"{name}_macs50_rt{round_to}.onnx"
                _prune_onnx(source, path, target_macs=0.5, round_to=round_to)
                variants[f"onnxslim target_macs=0.5 round_to={round_to}"] = path
            tp_path = folder / f"{name}_tp.onnx"
            tp_ratio = _torch_pruning(module, shape, 0.5, tp_path)
            if tp_ratio is not None:
                variants[f"torch-pruning l2 ratio={tp_ratio:.3f} (MACs 0.5)"] = tp_path
            base_macs = _macs(source)
            latency = _time(variants, shape, threads, rounds, seconds_per_round)
            for variant, path in variants.items():
                widths = _conv_widths(path)
                rows.append(
                    {
                        "model": name,
                        "variant": variant,
                        "macs_fraction": round(_macs(path) / base_macs, 3),
                        "convs_multiple_of_8": f"{sum(w % 8 == 0 for w in widths)}/{len(widths)}",
                        "convs_multiple_of_16": f"{sum(w % 16 == 0 for w in widths)}/{len(widths)}",
                        "latency_ms": round(latency[variant], 3),
                        "speedup": round(latency["original"] / latency[variant], 2),
                    }
                )
    return rows


def _tensor(shape):
    import torch

    return torch.randn(*shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet,mobilenetv2")
    parser.add_argument("--ratios", default="0.25,0.5,0.75")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds-per-round", type=float, default=0.4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = run(
        args.models.split(","),
        [float(r) for r in args.ratios.split(",")],
        args.threads,
        args.rounds,
        args.seconds_per_round,
    )
    print(f"the default round_to on this CPU: {cpu_channel_block()}")
    print(
        f"{'model':<12} {'variant':<46} {'MACs':>6} {'conv%8':>7} {'conv%16':>7} {'ms':>8} {'speedup':>8}"
    )
    for row in rows:
        print(
            f"{row['model']:<12} {row['variant']:<46} {row['macs_fraction']:>6.3f} {row['convs_multiple_of_8']:>7} {row['convs_multiple_of_16']:>7} "
            f"{row['latency_ms']:>8.3f} {row['speedup']:>7.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(json_safe(rows), allow_nan=False, indent=2))


if __name__ == "__main__":
    main()
