"""Prune a digits CNN by 50 % of its channels, then recover its accuracy by label-free distillation.

Data: scikit-learn's ``load_digits`` (1797 real 8x8 images), upsampled to 32x32, split 80/20
(stratified, fixed seed). Teacher: ``onnxslim.testing.resnet_style`` trained with labels in torch,
exported to ONNX. Student: the teacher pruned by ``StructuredPrune(ratio=0.5)`` on the ONNX graph.
Distillation: ``Distill`` with the teacher in ONNX Runtime, on the *training images without labels*.
Reports teacher / pruned / distilled test accuracy, MACs and the epochs used.

    python benchmarks/distill_digits.py [--teacher-epochs 15] [--distill-epochs 40] [--lr 2e-3] [--json out.json]
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
from onnxslim.passes.distillation import Distill


def digits_32(seed: int):
    digits = load_digits()
    images = np.kron(digits.images / 16.0, np.ones((4, 4))).astype(np.float32)[
        :, None
    ]  # 8x8 -> 32x32
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--distill-epochs", type=int, default=40)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    train_x, test_x, train_y, test_y = digits_32(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        teacher_module = train_teacher(train_x, train_y, args.teacher_epochs, args.seed)
        teacher_path = testing.export_torch(
            teacher_module, (torch.from_numpy(train_x[:1]),), tmp / "teacher.onnx"
        )
        teacher_seconds = time.perf_counter() - started
        teacher_acc = accuracy(teacher_path, test_x, test_y)

        from onnxslim.passes.pruning import StructuredPrune

        model = onnxslim.load(teacher_path)
        macs_before = onnxslim.model_stats(model).macs
        context = onnxslim.PassContext(
            reference_path=teacher_path, sample_inputs=[{"input0": train_x[:8]}], workdir=tmp
        )
        prune = StructuredPrune(ratio=args.ratio, round_to=8).apply(model, context)
        model = prune.model
        macs_after = onnxslim.model_stats(model).macs
        pruned_acc = accuracy(model, test_x, test_y)

        # Distill on the training images only, without their labels.
        unlabeled = [{"input0": train_x[i : i + 1]} for i in range(len(train_x))]
        started = time.perf_counter()
        distill = Distill(
            unlabeled,
            teacher=str(teacher_path),
            epochs=args.distill_epochs,
            lr=args.lr,
            batch_size=64,
            temperature=4.0,
            seed=args.seed,
        ).apply(model, context)
        distill_seconds = time.perf_counter() - started
        distilled_acc = accuracy(distill.model, test_x, test_y)

    summary = distill.summary
    result = {
        "train_samples": len(train_x),
        "test_samples": len(test_x),
        "teacher_accuracy": teacher_acc,
        "pruned_accuracy": pruned_acc,
        "distilled_accuracy": distilled_acc,
        "gap_to_teacher_points": 100 * (teacher_acc - distilled_acc),
        "macs": {"teacher": macs_before, "pruned": macs_after, "ratio": macs_after / macs_before},
        "pruning": {k: v for k, v in prune.summary.items() if not isinstance(v, (list, dict))},
        "teacher_epochs": args.teacher_epochs,
        "distill_epochs_run": summary["epochs_run"],
        "distill_best_epoch": summary["best_epoch"],
        "labels_used_for_distillation": False,
        "fidelity_before": summary["fidelity_before"],
        "fidelity_after": summary["fidelity_after"],
        "loss_per_epoch": [round(r["loss"], 5) for r in summary["history"]],
        "teacher_train_seconds": round(teacher_seconds, 1),
        "distill_seconds": round(distill_seconds, 1),
    }
    print(f"teacher   test accuracy {100 * teacher_acc:6.2f} %  ({macs_before / 1e6:.1f} M MACs)")
    print(
        f"pruned    test accuracy {100 * pruned_acc:6.2f} %  ({macs_after / 1e6:.1f} M MACs, {100 * macs_after / macs_before:.0f} %)"
    )
    print(
        f"distilled test accuracy {100 * distilled_acc:6.2f} %  ({summary['epochs_run']} epochs, best {summary['best_epoch']}, no labels)"
    )
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
