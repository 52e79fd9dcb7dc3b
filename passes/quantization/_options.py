"""QuantizeStatic's declared options (a light module: ``onnxslim optimize --help`` reads it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

from onnxslim.options import option

__all__ = ["QuantizeOptions"]


@dataclasses.dataclass(frozen=True)
class QuantizeOptions:
    """Options of the ``quantize`` pass."""

    calibration: Any = option(
        None,
        flag="--calibration",
        metavar="DATA",
        help="calibration data: a reader, an .npz file, a folder of .npy/.npz or images, an "
        "iterable of dicts/arrays (torch DataLoader included), or 'random' (smoke data); "
        "None uses the pipeline's data",
    )
    method: Literal["minmax", "percentile", "entropy", "mse"] = option(
        "percentile",
        flag="--calibration-method",
        help="range method: minmax, percentile, entropy or mse",
    )
    percentile: float = option(99.999, help="two-sided percentile kept by 'percentile'")
    moving_average: bool = option(False, help="'minmax' uses moving-average min/max over batches")
    samples: int | None = option(
        None,
        flag="--calibration-samples",
        metavar="N",
        help="at most this many calibration samples",
    )
    batch_size: int = option(1, help="samples per calibration batch")
    bins: int = option(2048, help="histogram bins per tensor")
    target: Literal["cpu", "tensorrt", "cuda"] = option(
        "cpu",
        flag="--quant-target",
        help="cpu (detects VNNI/AMX/ARM dot), tensorrt (symmetric int8), cuda",
    )
    per_channel: bool | None = option(None, help="override the target profile (None keeps it)")
    reduce_range: bool | None = option(None, help="override the target profile (None keeps it)")
    activation_type: Literal["int8", "uint8"] | None = option(
        None, help="override the target profile (None keeps it)"
    )
    weight_type: Literal["int8", "uint8"] | None = option(
        None, help="override the target profile (None keeps it)"
    )
    activation_symmetric: bool | None = option(
        None, help="override the target profile (None keeps it)"
    )
    weight_symmetric: bool | None = option(None, help="override the target profile (None keeps it)")
    op_types: Sequence[str] | None = option(
        None, help="op types to quantize; None lets the latency guard pick among op-class sets"
    )
    exclude: Sequence[str] | None = option(
        None,
        flag="--quant-exclude",
        metavar="SEL",
        help="nodes kept in float: names, 're:REGEX' or 'op:OpType'",
    )
    mode: Literal["auto", "static", "dynamic"] = option(
        "auto",
        help="auto (static QDQ or dynamic MatMul quantization, by measurement), static, dynamic",
    )
    fuse: bool = option(
        True,
        help="exact fusions (BatchNorm, Conv+Mul/Add, HardSwish, LayerNorm) before QDQ placement "
        "so QDQ wraps the fused ops; each verified on samples and dropped if not exact",
    )
    latency_guard: bool = option(
        True,
        flag="--no-latency-guard",
        help="time candidates vs the input; never return a slower model",
    )
    latency_runs: int = option(10, help="interleaved timing rounds (medians)")
    latency_batch: int = option(
        1,
        flag="--latency-batch",
        metavar="N",
        help="batch size the latency guard times at: the batch you deploy with (the model's "
        "fixed batch wins); int8 can win at one batch and lose at another",
    )
    min_speedup: float = option(
        1.05,
        help="a candidate must beat the input by this factor in two separate interleaved "
        "measurements (a noisy tie must not ship a slower model)",
    )
    accuracy_guard: bool = option(
        True,
        flag="--no-accuracy-guard",
        help="keep sensitive layers in float until the bound holds",
    )
    min_sqnr_db: float | None = option(20.0, help="output SQNR bound (dB); None turns it off")
    min_top1: float | None = option(
        0.95,
        help="top-1 agreement bound where outputs look like class scores; None turns it off",
    )
    metric: str | Callable[[list, list], Any] | None = option(
        None,
        flag="--quant-metric",
        metavar="METRIC",
        help="the accuracy guard's task metric, then the only bound: top1, cosine (embeddings), "
        "sqnr, iou@T (maps thresholded at T), seq-top1 (per-step argmax), ctc (characters of "
        "greedy CTC decodes kept, blank 0), or in the API "
        "a callable (reference_outputs, candidate_outputs) -> bool, or a score with min_score; "
        "None picks one per output from its shape and range",
    )
    min_score: float | None = option(
        None,
        flag="--quant-min-score",
        metavar="X",
        help="the metric's floor; None: top1 0.95, cosine 0.99, sqnr 20 (dB), iou 0.95, "
        "seq-top1 0.99, ctc 0.99",
    )
    eval_samples: int = option(
        8,
        help="samples the guards judge on (more for sequence scores: max_eval_samples): the "
        "pipeline's verification data when the calibration data is other data, else held out "
        "from the calibration data (the last ones, when at least 4x as many, or 64, remain for "
        "calibration), else calibration samples",
    )
    max_eval_samples: int = option(
        64,
        help="the most samples the guard judges on where a sequence score (CTC, per-step top-1) "
        "needs more than eval_samples: enough characters/steps that the score's standard error "
        "at the bound is under half its slack (about 4*b/(1-b) units); <= eval_samples: off",
    )
    equalize: bool | None = option(
        None,
        help="cross-layer equalization of Conv -> ReLU -> Conv pairs (depthwise included), exact "
        "in float: None tries it when no candidate meets the bound, True always, False never",
    )
    smooth_quant: bool | None = option(
        None,
        help="SmoothQuant of MatMuls whose inputs have outlier channels, exact in float: None "
        "tries it when no candidate meets the bound, True always, False never",
    )
    smooth_quant_alpha: float = option(0.5, help="SmoothQuant's migration strength alpha in [0, 1]")
    bias_correction: bool | None = option(
        None,
        help="fold each layer's int8 output-mean shift on the calibration data into its bias: "
        "None tries it when no candidate meets the bound, True always, False never",
    )
    qat_epochs: int = option(
        0,
        flag="--qat-epochs",
        metavar="N",
        help="quantization-aware distillation (fake-quant student trained from the float model, "
        "no labels) for N epochs when the other recoveries leave the bound failing; 0: off",
    )
    qat_lr: float = option(1e-4, help="QAT-KD learning rate")
    cache_dir: str | None = option(
        None, help="folder for the statistics cache; None disables the cache"
    )
    threads: int | None = option(
        None,
        help="intra-op threads for calibration and timing (None: ORT's default); set it for byte-identical sharded calibration",
    )
