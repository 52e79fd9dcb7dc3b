"""Prune a digits CNN by 50 % of its channels, then recover its accuracy by label-free distillation.

Data: scikit-learn's ``load_digits`` (1797 real 8x8 images), upsampled to 32x32.
Teacher (``--teacher``):
  ``demo`` (default): the shipped demo model (``onnxslim.data.demo_model_path()``, a compact
    ResNet trained with labels on the demo's training split), with that split (1347 train /
    450 test images) — nothing to train, so the budget goes to distillation;
  ``train``: the same architecture (``onnxslim.testing.resnet_style``) trained here with labels
    in torch on an 80/20 stratified split (1437 / 360), exported to ONNX.
Student: the teacher pruned by ``StructuredPrune(ratio=0.5)`` (half the channels of every
prunable group, so about a quarter of the MACs). Distillation: ``Distill`` with the teacher in
ONNX Runtime, on the *training images without labels*. Prints teacher / pruned / distilled test
accuracy, MACs, epochs and seconds.

    python benchmarks/distill_digits.py [--teacher demo|train] [--ratio 0.5] [--epochs 40]
        [--lr 6e-3] [--batch-size 32] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import onnxslim
from onnxslim import testing
from onnxslim.formatting import json_safe
from onnxslim.inputs import open_samples
from onnxslim.passes.distillation import Distill
from onnxslim.passes.pruning import StructuredPrune


def digits_32(seed: int):
    digits = load_digits()
    images = np.kron(digits.images / 16.0, np.ones((4, 4))).astype(np.float32)[:, None]
    return train_test_split(
        images,
        digits.target.astype(np.int64),
        test_size=0.2,
        random_state=seed,
        stratify=digits.target,
    )


def train_teacher(train_x, train_y, epochs: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = testing.resnet_style(
        in_channels=1, num_classes=10, widths=(16, 32, 64), blocks_per_stage=1
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = int(np.ceil(len(train_x) / 64))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, 3e-3, total_steps=epochs * steps_per_epoch
    )
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 64):
            batch = order[start : start + 64]
            # small random shifts: a cheap augmentation that keeps the teacher from overfitting
            shift = tuple(int(s) for s in torch.randint(-2, 3, (2,), generator=generator))
            inputs = torch.roll(x[batch], shifts=shift, dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(inputs), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def accuracy(path_or_model, test_x, test_y) -> float:
    session = onnxslim.create_session(
        path_or_model, options=onnxslim.session_options(allow_spinning=False)
    )
    logits = session.run(None, {session.get_inputs()[0].name: test_x})[0]
    return float((logits.argmax(1) == test_y).mean())


def teacher_and_data(args: argparse.Namespace, tmp: Path):
    """(teacher path, train images, test images, test labels, seconds spent training)."""
    if args.teacher == "demo":
        from onnxslim.data import demo_data, demo_model_path

        data = demo_data()
        return (
            demo_model_path(),
            data["train_images"],
            data["test_images"],
            data["test_labels"],
            0.0,
        )
    train_x, test_x, train_y, test_y = digits_32(args.seed)
    started = time.perf_counter()
    module = train_teacher(train_x, train_y, args.teacher_epochs, args.seed)
    path = testing.export_torch(module, (torch.from_numpy(train_x[:1]),), tmp / "teacher.onnx")
    return path, train_x, test_x, test_y, time.perf_counter() - started


def gradual(args, model, context, teacher_acc, test_x, test_y) -> None:
    """The prune_distill pass: ``--epochs`` split over ``--steps`` steps, accuracy per step."""
    from onnxslim.passes._gradual import PruneDistill

    started = time.perf_counter()
    result = PruneDistill(
        target_macs=args.target_macs or 0.25,
        steps=args.steps,
        criterion=args.criterion,
        round_to=args.round_to,
        epochs=max(1, args.epochs // args.steps),
        lr=args.lr,
        feature_weight=args.feature_weight,
        distill={"batch_size": args.batch_size, "threads": args.threads, "seed": args.seed},
        metric=lambda m: accuracy(m, test_x, test_y),
    ).apply(model, context)
    final = result.summary["steps"][-1]
    summary = {
        "teacher_accuracy": teacher_acc,
        "steps": result.summary["steps"],
        "distilled_accuracy": final["metric"],
        "gap_to_teacher_points": 100 * (teacher_acc - final["metric"]),
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(json_safe(summary), allow_nan=False, indent=2))
    if args.json:
        args.json.write_text(json.dumps(json_safe(summary), allow_nan=False, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", choices=("demo", "train"), default="demo")
    parser.add_argument("--teacher-epochs", type=int, default=15, help="with --teacher train")
    parser.add_argument("--ratio", type=float, default=0.5, help="share of channels removed")
    parser.add_argument(
        "--target-macs", type=float, default=None, help="fraction of MACs kept (replaces --ratio)"
    )
    parser.add_argument(
        "--steps", type=int, default=1, help="> 1: prune_distill in this many steps (epochs split)"
    )
    parser.add_argument("--criterion", default="l2", help="pruning importance (l2, taylor, ...)")
    parser.add_argument(
        "--feature-weight", type=float, default=0.0, help="feature (hint) loss weight; 0: off"
    )
    parser.add_argument("--round-to", type=int, default=8)
    parser.add_argument("--epochs", "--distill-epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=6e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: Distill times it)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads and args.teacher == "train":
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        teacher_path, train_x, test_x, test_y, teacher_seconds = teacher_and_data(args, tmp)
        teacher_acc = accuracy(teacher_path, test_x, test_y)
        input_name = onnxslim.input_specs(onnxslim.load(teacher_path))[0].name

        model = onnxslim.load(teacher_path)
        macs_before = onnxslim.model_stats(model).macs
        context = onnxslim.PassContext(
            reference_path=teacher_path,
            sample_inputs=[{input_name: train_x[:8]}],
            data=open_samples({input_name: train_x}),
            workdir=tmp,
        )
        amount = {"target_macs": args.target_macs} if args.target_macs else {"ratio": args.ratio}
        if args.steps > 1:
            return gradual(args, model, context, teacher_acc, test_x, test_y)
        prune = StructuredPrune(**amount, round_to=args.round_to, criterion=args.criterion).apply(
            model, context
        )
        model = prune.model
        macs_after = onnxslim.model_stats(model).macs
        pruned_acc = accuracy(model, test_x, test_y)

        # Distil on the training images only, without their labels.
        started = time.perf_counter()
        distill = Distill(
            [{input_name: train_x}],
            teacher=str(teacher_path),
            epochs=args.epochs,
            lr=args.lr,
            batch_size=args.batch_size,
            temperature=args.temperature,
            threads=args.threads,
            seed=args.seed,
            feature_weight=args.feature_weight,
        ).apply(model, context)
        distill_seconds = time.perf_counter() - started
        distilled_acc = accuracy(distill.model, test_x, test_y)

    summary = distill.summary
    gap = 100 * (teacher_acc - distilled_acc)
    result = {
        "teacher": "demo model" if args.teacher == "demo" else "trained here",
        "train_samples": len(train_x),
        "test_samples": len(test_x),
        "teacher_accuracy": teacher_acc,
        "pruned_accuracy": pruned_acc,
        "distilled_accuracy": distilled_acc,
        "gap_to_teacher_points": gap,
        "within_half_point": gap <= 0.5,
        "channels_removed": None if args.target_macs else args.ratio,
        "target_macs": args.target_macs,
        "criterion": args.criterion,
        "feature_weight": args.feature_weight,
        "macs": {"teacher": macs_before, "pruned": macs_after, "ratio": macs_after / macs_before},
        "pruning": {k: v for k, v in prune.summary.items() if not isinstance(v, (list, dict))},
        "teacher_epochs": args.teacher_epochs if args.teacher == "train" else None,
        "distill": {
            "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"],
            "steps": summary["steps"],
            "lr": args.lr,
            "batch_size": args.batch_size,
            "temperature": args.temperature,
            "threads": summary["threads"],
            "teacher_cache": summary["teacher_cache"],
        },
        "labels_used_for_distillation": False,
        "fidelity_before": summary["fidelity_before"],
        "fidelity_after": summary["fidelity_after"],
        "loss_per_epoch": [round(r["loss"], 5) for r in summary["history"]],
        "teacher_train_seconds": round(teacher_seconds, 1),
        "distill_seconds": round(distill_seconds, 1),
        "seconds_per_step": round(distill_seconds / max(summary["steps"], 1), 4),
    }
    print(json.dumps(json_safe(result), allow_nan=False, indent=2))
    print(
        f"teacher   test accuracy {100 * teacher_acc:6.2f} %  ({macs_before / 1e6:.2f} M MACs, "
        f"{result['teacher']}, {len(test_x)} test images)"
    )
    print(
        f"pruned    test accuracy {100 * pruned_acc:6.2f} %  ({macs_after / 1e6:.2f} M MACs, "
        f"{100 * macs_after / macs_before:.0f} %; criterion {args.criterion})"
    )
    print(
        f"distilled test accuracy {100 * distilled_acc:6.2f} %  ({summary['epochs_run']} epochs, "
        f"best {summary['best_epoch']}, no labels, {distill_seconds:.0f} s, "
        f"{summary['threads']} thread(s)); gap to teacher {gap:.2f} points"
    )
    if args.json:
        args.json.write_text(json.dumps(json_safe(result), allow_nan=False, indent=2))


if __name__ == "__main__":
    main()
