"""openWakeWord's speech embedding CNN through cleanup -> prune -> distill -> int8, beside ORT's
``quantize_static`` on the same calibration windows (the ``speech`` section of
``pipeline_real_models.py``).

The model: ``embedding_model.onnx`` of the ``openwakeword`` wheel (0.5.x ships the models; a
TF -> ONNX port of Google's speech_embedding: 20 Conv, LeakyReLU/Max, 76 mel frames x 32 bins ->
96-d). Its input comes from the wheel's own ``melspectrogram.onnx`` (kept in float, not
optimized) with openWakeWord's ``x / 10 + 2`` transform, in windows of 76 frames every 8 (80 ms),
as ``openwakeword.utils.AudioFeatures`` computes them.

Data: ``onnxslim.testing.speech_like_audio`` (harmonic syllables with formants, fricatives,
pauses, background noise at 15-24 dB SNR) with frame labels: 8 clips of 20 s (every 2nd window,
~970) to distil on and calibrate with, 6 other clips (~1450 windows) to evaluate on. Pruning
keeps 50 % of the MACs (``--speech-macs``; ``--speech-prune R`` cuts a channel ratio instead),
then 8 epochs of distillation (about 2 min on one core) (``--speech-epochs``), then QuantizeStatic guarded by the task
metric below (speech agreement >= ``--speech-min-agree``).

Task metric without human labels: the wake-word heads never fire on synthetic audio (scores
< 0.02), so a 0.5 threshold on them says nothing. Instead a speech-activity head is fitted once
on the float model's embeddings of the training clips (logistic regression on the synthetic
frame labels, as openWakeWord fits its own heads on these embeddings) and applied unchanged to
every stage: "speech agree" is the share of eval windows whose speech probability falls on the
same side of 0.5 as the float model's, "speech acc" the accuracy vs the synthetic labels. Also:
embedding SQNR and cosine vs float, and the shipped hey_jarvis head's score error.

Speed: per window (batch 1, the streaming case), one intra-op thread, spinning off, the timing
thread pinned to CPU 0, medians of interleaved rounds.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import onnxslim
from onnxslim.fidelity import sqnr_db
from onnxslim.formatting import human_bytes, human_count, progress_to_stderr
from onnxslim.runtime import create_session, interleaved_timing, session_options, session_run
from onnxslim.testing import SpeechLikeClip, frame_agreement, speech_like_audio

WINDOW, STEP = 76, 8  # mel frames per embedding window and between windows (openWakeWord's)
EMBEDDING_INPUT, EMBEDDING_OUTPUT = "input_1", "conv2d_19"


def add_speech_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speech-macs", type=float, default=0.5, help="MACs kept by pruning")
    parser.add_argument(
        "--speech-prune", type=float, help="channel ratio cut instead of a MACs target"
    )
    parser.add_argument("--speech-epochs", type=int, help="distillation epochs (default 2 / 8)")
    parser.add_argument("--speech-lr", type=float, default=1e-3)
    parser.add_argument(
        "--speech-min-agree", type=float, default=0.95, help="int8 guard: speech agreement kept"
    )


def wakeword_models() -> Path:
    """The folder of openWakeWord's ONNX models (the 0.5.x wheels ship them)."""
    try:
        import openwakeword
    except ImportError:
        raise SystemExit(
            "the speech section needs openWakeWord's models: pip install openwakeword==0.5.1"
        ) from None
    folder = Path(openwakeword.__file__).parent / "resources" / "models"
    if not (folder / "embedding_model.onnx").is_file():
        raise SystemExit(f"no embedding_model.onnx in {folder}: install openwakeword==0.5.1")
    return folder


def _session(path: Path):
    options = session_options(intra_op_threads=1, inter_op_threads=1, allow_spinning=False)
    return create_session(path, options=options)


def mel_windows(mel_session, clip: SpeechLikeClip) -> tuple[np.ndarray, np.ndarray]:
    """Embedding inputs [n, 76, 32, 1] of a clip and each window's speech label (>= half)."""
    pcm = clip.pcm16().astype(np.float32)[None]
    spec = np.squeeze(mel_session.run(None, {"input": pcm})[0]) / 10 + 2
    starts = range(0, len(spec) - WINDOW + 1, STEP)
    windows = np.stack([spec[s : s + WINDOW] for s in starts])[..., None].astype(np.float32)
    labels = np.array([clip.labels[s : s + WINDOW].mean() >= 0.5 for s in starts])
    return windows, labels


def fit_speech_head(embeddings: np.ndarray, labels: np.ndarray, steps: int = 2000):
    """Logistic regression (full-batch gradient descent, L2 1e-3) on standardised embeddings."""
    mean, std = embeddings.mean(0), embeddings.std(0) + 1e-6
    x = (embeddings - mean) / std
    weights, bias = np.zeros(x.shape[1]), 0.0
    target = labels.astype(np.float64)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ weights + bias)))
        weights -= 0.5 * (x.T @ (p - target) / len(x) + 1e-3 * weights)
        bias -= 0.5 * float(np.mean(p - target))

    def head(e: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(((e - mean) / std) @ weights + bias)))

    return head


def embed(path: Path, windows: np.ndarray) -> np.ndarray:
    runner = _session(path)
    out = [
        runner.run(None, {EMBEDDING_INPUT: windows[i : i + 64]})[0]
        for i in range(0, len(windows), 64)
    ]
    return np.concatenate(out).reshape(len(windows), -1)


def jarvis_scores(session, embeddings: np.ndarray, clip_lengths: list[int]) -> np.ndarray:
    """hey_jarvis scores on every 16-embedding context inside each clip."""
    name = session.get_inputs()[0].name
    scores, start = [], 0
    for length in clip_lengths:
        clip = embeddings[start : start + length]
        for end in range(16, length + 1):
            scores.append(session.run(None, {name: clip[end - 16 : end][None]})[0].ravel()[0])
        start += length
    return np.array(scores)


def ort_quantize(source: Path, calibration: np.ndarray, output: Path, activation: str) -> Path:
    """ORT's quantize_static: QDQ, per-channel S8 weights, MinMax, on the given windows."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from quant_vs_ort import ort_prepare  # benchmarks/ is on sys.path

    class Reader:
        def __init__(self) -> None:
            self.index = 0

        def get_next(self):
            if self.index >= len(calibration):
                return None
            self.index += 1
            return {EMBEDDING_INPUT: calibration[self.index - 1 : self.index]}

        def rewind(self) -> None:
            self.index = 0

    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = ort_prepare(source, output.parent)
    # ORT's recommended pre-processing (symbolic shapes, ORT graph optimizations) before quantizing
    preprocessed = prepared.with_suffix(".pre.onnx")
    quant_pre_process(str(prepared), str(preprocessed))
    prepared = preprocessed
    quantize_static(
        str(prepared),
        str(output),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8 if activation == "u8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return output


def pinned_latency(paths: list[Path], feed: dict, runs: int) -> list[float]:
    """Median ms per model: one thread, spinning off, this thread on CPU 0, interleaved."""
    sessions = [_session(path) for path in paths]
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(previous)})
    try:
        timing = interleaved_timing(
            [session_run(s, [feed]) for s in sessions], rounds=runs, warmup=5, min_block_s=0.02
        )
    finally:
        os.sched_setaffinity(0, previous)
    return [1000 * seconds for seconds in timing.quantiles(0.5)]


def _clips(count: int, seconds: float, seed: int) -> list[SpeechLikeClip]:
    return [
        speech_like_audio(seconds, seed=seed + i, snr_db=15.0 + 3 * (i % 4)) for i in range(count)
    ]


def _features(mel_session, clips: list[SpeechLikeClip], every: int = 1):
    """Windows, labels and windows per clip; ``every`` > 1 keeps every n-th (they overlap 90 %)."""
    pairs = [mel_windows(mel_session, clip) for clip in clips]
    pairs = [(w[::every], y[::every]) for w, y in pairs]
    return (
        np.concatenate([p[0] for p in pairs]),
        np.concatenate([p[1] for p in pairs]),
        [len(p[0]) for p in pairs],
    )


def _pipeline(args, source: Path, train: np.ndarray, folder: Path, guard) -> list:
    from onnxslim.passes import Cleanup, Distill, QuantizeStatic, StructuredPrune

    items = [{EMBEDDING_INPUT: train[i : i + 1]} for i in range(len(train))]
    passes = [
        Cleanup(),
        StructuredPrune(ratio=args.speech_prune)
        if args.speech_prune
        else StructuredPrune(target_macs=args.speech_macs),
        Distill(
            items,
            epochs=args.speech_epochs or (2 if args.quick else 8),
            batch_size=32,
            lr=args.speech_lr,
            output_losses={EMBEDDING_OUTPUT: "mse"},
            seed=0,
        ),
        QuantizeStatic(calibration=items[:64], min_top1=None, metric=guard),
    ]
    verify = [{EMBEDDING_INPUT: train[i : i + 8]} for i in (0, len(train) // 2)]
    folder.mkdir(parents=True, exist_ok=True)
    result = onnxslim.Pipeline(passes).run(
        source,
        data=verify,
        sizes={EMBEDDING_INPUT: (1, WINDOW, 32, 1)},
        stage_dir=folder,
        progress=progress_to_stderr,
    )
    return result.report.stages


def _row(label: str, path: Path, reference: dict, embeddings: np.ndarray, extra: dict) -> dict:
    probs = reference["head"](embeddings)
    cosine = np.sum(reference["emb"] * embeddings, 1) / (
        np.linalg.norm(reference["emb"], axis=1) * np.linalg.norm(embeddings, axis=1)
    )
    return {
        "stage": label,
        **extra,
        "size": human_bytes(path.stat().st_size),
        "speech agree": f"{frame_agreement(reference['probs'], probs):.4f}",
        "speech acc": f"{np.mean((probs > 0.5) == reference['labels']):.4f}",
        "emb SQNR": f"{sqnr_db(reference['emb'], embeddings):.1f} dB",
        "emb cos": f"{cosine.mean():.4f}",
    }


def run_speech(args, folder: Path) -> dict:
    models = wakeword_models()
    mel = _session(models / "melspectrogram.onnx")
    started = time.perf_counter()
    train_x, train_y, _ = _features(mel, _clips(4 if args.quick else 8, 20.0, seed=1), every=2)
    eval_x, eval_y, lengths = _features(mel, _clips(3 if args.quick else 6, 20.0, seed=101))
    source = models / "embedding_model.onnx"
    head = fit_speech_head(embed(source, train_x), train_y)
    guard = agreement_guard(head, args.speech_min_agree)
    stages = _pipeline(args, source, train_x, folder / "speech", guard)
    pipeline_s = time.perf_counter() - started
    paths = [Path(stage.model_path) for stage in stages]
    labels = [
        stage.stage + (" (fallback)" if stage.summary.get("fallback") else "") for stage in stages
    ]
    extras = [{"params": human_count(s.parameters), "MACs": human_count(s.macs)} for s in stages]
    calibration = train_x[:64]
    distilled = next(i for i, s in enumerate(stages) if s.stage == "distill")
    for activation in ("u8", "s8"):
        for base, name in ((paths[0], "float"), (paths[distilled], "distilled")):
            out = folder / f"ort-{activation}-{name}.onnx"
            paths.append(ort_quantize(base, calibration, out, activation))
            labels.append(f"ORT qs {activation.upper()}S8 pc ({name})")
            extras.append(
                {"params": extras[0 if name == "float" else distilled]["params"], "MACs": ""}
            )
    latency = pinned_latency(paths, {EMBEDDING_INPUT: eval_x[:1]}, args.runs)
    reference_emb = embed(paths[0], eval_x)
    reference = {"emb": reference_emb, "head": head, "labels": eval_y, "probs": head(reference_emb)}
    jarvis = _session(models / "hey_jarvis_v0.1.onnx")
    jarvis_ref = jarvis_scores(jarvis, reference_emb, lengths)
    rows = []
    for label, path, extra, ms in zip(labels, paths, extras, latency):
        embeddings = embed(path, eval_x)
        row = _row(label, path, reference, embeddings, extra)
        row["jarvis |d|max"] = (
            f"{np.abs(jarvis_scores(jarvis, embeddings, lengths) - jarvis_ref).max():.4f}"
        )
        row["p50 1 thread"] = f"{ms:.3f} ms"
        row["speed"] = f"{latency[0] / ms:.2f}x"
        rows.append(row)
    return {
        "rows": rows,
        "columns": list(rows[0]),
        "note": (
            f"{len(eval_x)} eval windows of {len(lengths)} unseen clips ({eval_y.mean():.0%} speech; "
            f"float head acc {np.mean((reference['probs'] > 0.5) == eval_y):.3f}); distilled on "
            f"{len(train_x)} windows, int8 calibrated on the same 64 for both tools; "
            f"hey_jarvis max score on float {jarvis_ref.max():.4f}; pipeline {pipeline_s:.0f}s"
        ),
        "summaries": {
            s.stage: {k: v for k, v in s.summary.items() if isinstance(v, (int, float, str, bool))}
            for s in stages[1:]
        },
    }


def agreement_guard(head, threshold: float):
    """QuantizeStatic's task metric: speech agreement with the input model >= threshold."""

    def metric(reference: list, candidate: list) -> bool:
        a = np.concatenate([r[EMBEDDING_OUTPUT] for r in reference]).reshape(-1, 96)
        b = np.concatenate([c[EMBEDDING_OUTPUT] for c in candidate]).reshape(-1, 96)
        return frame_agreement(head(a), head(b)) >= threshold

    return metric
