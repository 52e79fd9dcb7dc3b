"""Trains the embedded demo model: a compact ResNet on scikit-learn's digits (8x8 -> 32x32).

Writes onnxslim/data/digits_resnet.onnx and onnxslim/data/digits.npz (calibration and
evaluation splits as 8x8 uint8 images + labels; `onnxslim.demo_data` upsamples them).
Reproduce with:  python benchmarks/train_demo_model.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from onnxslim.data import upsample_digits
from onnxslim.testing import export_torch, resnet_style

DATA_DIR = Path(__file__).resolve().parents[1] / "onnxslim" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    parser.add_argument(
        "--widths", type=int, nargs=3, default=(32, 32, 64), help="channels of the three stages"
    )
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    digits = load_digits()
    images = digits.images.astype(np.uint8)  # values 0..16
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.25, random_state=args.seed, stratify=digits.target
    )
    model = resnet_style(
        in_channels=1, num_classes=10, widths=tuple(args.widths), blocks_per_stage=1
    )
    inputs = torch.from_numpy(upsample_digits(train_x))
    labels = torch.from_numpy(train_y.astype(np.int64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=args.epochs * ((len(inputs) + 63) // 64)
    )
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        # light augmentation: one-pixel shifts keep the small net from memorising
        for start in range(0, len(inputs), 64):
            batch = order[start : start + 64]
            x = inputs[batch]
            shift = torch.randint(-2, 3, (2,), generator=generator)
            x = torch.roll(x, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (
                model(torch.from_numpy(upsample_digits(test_x))).argmax(1).numpy() == test_y
            ).mean()
        print(f"epoch {epoch + 1}: loss {loss.item():.4f}, test accuracy {100 * accuracy:.2f}%")
    args.out.mkdir(parents=True, exist_ok=True)
    export_torch(
        model,
        (torch.zeros(1, 1, 32, 32),),
        args.out / "digits_resnet.onnx",
        input_names=["image"],
        output_names=["logits"],
        do_constant_folding=False,  # keep BatchNorm nodes: the demo's cleanup folds them
    )
    rng = np.random.default_rng(args.seed)
    calibration = rng.choice(len(train_x), size=256, replace=False)
    np.savez_compressed(
        args.out / "digits.npz",
        train_images=train_x,
        train_labels=train_y.astype(np.int64),
        calibration_index=np.sort(calibration),
        test_images=test_x,
        test_labels=test_y.astype(np.int64),
    )
    print(f"wrote {args.out / 'digits_resnet.onnx'} and {args.out / 'digits.npz'}")


if __name__ == "__main__":
    main()
