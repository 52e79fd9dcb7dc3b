"""Pass summaries as lines for people: exact lines for known summaries, missing keys tolerated."""

from __future__ import annotations

from pathlib import Path

from onnxslim.cli import main
from onnxslim.passes._cleanup_describe import describe as describe_cleanup
from onnxslim.passes.distillation._describe import describe as describe_distill
from onnxslim.passes.pruning._describe import describe as describe_prune
from onnxslim.passes.quantization._describe import describe as describe_quantize
from onnxslim.registry import PASSES, describe_summary

QUANTIZE = {
    "data": "cal.npz",
    "smoke_data": False,
    "method": "percentile",
    "profile": {"target": "cpu", "activation_type": "uint8", "weight_type": "int8", "per_channel": True},
    "warnings": ["ORT re-quantized 1 excluded node(s) at load: c2"],
    "calibration": {"samples": 16},
    "latency_batch": 1,
    "latency_ms_before": 1.065,
    "candidates": [
        {"label": "all quantizable ops", "speedup": 1.826, "speedup_confirmed": 2.054, "chosen": True, "rejected": None},
        {"label": "dynamic MatMul/Gemm", "speedup": 0.91, "chosen": False, "rejected": "latency: 0.91x of the input (needs > 1.05x)"},
    ],
    "size_bytes_before": 393874,
    "chosen": "all quantizable ops",
    "fidelity": {"sqnr_db": 39.75, "top1_agreement": 1.0},
    "latency_ms_after": 0.648,
    "speedup": 1.826,
    "size_bytes_after": 126867,
    "nodes_quantized": ["c1", "c3", "fc"],
    "nodes_excluded": {"c2": "latency guard: Conv runs faster in float here", "stem": "user: op:Conv"},
    "metric": "top1",
    "judged_on": "4 verification samples",
}  # fmt: skip


def test_quantize_lines() -> None:
    assert describe_quantize(QUANTIZE) == [
        "Static int8 for cpu: uint8 activations x int8 per-channel weights; ranges by percentile on 16 sample(s) of cal.npz.",
        "Chose 'all quantizable ops': 1.06 ms -> 0.648 ms at batch 1 (1.83x faster), SQNR 39.8 dB, top-1 100.0% vs float; metric top1 (judged on 4 verification samples).",
        "Tried 2 candidate(s): 'all quantizable ops' 1.83x (chosen, confirmed 2.05x); 'dynamic MatMul/Gemm' rejected (latency: 0.91x of the input (needs > 1.05x)).",
        "3 node(s) run in int8, 2 kept in float.",
        "Kept in float (latency guard: Conv runs faster in float here): c2.",
        "Kept in float (user: op:Conv): stem.",
        "File size 384.64 KiB -> 123.89 KiB.",
        "Warning: ORT re-quantized 1 excluded node(s) at load: c2.",
    ]  # fmt: skip


def test_quantize_fallback_and_missing_keys() -> None:
    fallback = {
        "method": "minmax",
        "data": "random (smoke data)",
        "smoke_data": True,
        "fallback": "returned the float model: no int8 candidate was both accurate and faster",
        "int4_nodes": ["m1", "m2"],
        "int4_block_size": 32,
    }
    assert describe_quantize(fallback) == [
        "Ranges by minmax on random (smoke data) (random smoke data: not fit for deployment).",
        "Returned the float model: no int8 candidate was both accurate and faster.",
        "Int4 nodes: 2.",
        "Int4 block size: 32.",
    ]
    assert describe_quantize({}) == []


def test_prune_lines() -> None:
    summary = {
        "groups": 5,
        "prunable_groups": 3,
        "pruned_groups": 3,
        "units_removed": 24,
        "channels_kept": {"conv1": [16, 8], "conv2": [16, 8], "conv3": [32, 24], "fc": [10, 10]},
        "blocked": [{"group": 4, "producers": ["head"], "reasons": ["is a graph output"]}],
        "parameters": {"before": 20000, "after": 9000},
        "macs": {"before": 4_000_000, "after": 1_000_000, "kept_fraction": 0.25},
    }
    assert describe_prune(summary) == [
        "Pruned 3 of 3 prunable group(s) (5 in all), 24 channel(s)/unit(s) removed.",
        "MACs 4.00M -> 1.00M (25% kept); parameters 20.00k -> 9.00k (45% kept).",
        "Narrowed 3 layer(s): conv1 16 -> 8, conv2 16 -> 8, conv3 32 -> 24.",
        "1 group(s) left whole:",
        "  group #4 (head): is a graph output",
    ]
    assert describe_prune({"parameters": {"before": 10, "after": None}}) == []


def test_distill_lines() -> None:
    summary = {
        "teacher": "model.onnx",
        "student": "graph",
        "epochs_run": 3,
        "steps": 12,
        "best_epoch": 2,
        "stopped_early": True,
        "samples": 64,
        "world_size": 2,
        "loss_first_epoch": 1.926,
        "loss_last_epoch": 0.24,
        "sqnr_before_db": 12.5,
        "sqnr_after_db": "inf",
        "history": [
            {"epoch": 1, "fidelity": {"sqnr_db": 14.88}},
            {"epoch": 2, "fidelity": {"sqnr_db": "inf"}},
            {"epoch": 3},
        ],
        "fidelity_after": {"top1_agreement": 0.985},
        "initializers_updated": 7,
    }
    assert describe_distill(summary) == [
        "Trained 3 epoch(s), 12 step(s) on 64 sample(s) across 2 ranks, stopped early (fidelity stopped improving).",
        "Loss 1.926 -> 0.24; SQNR to the teacher 12.5 -> identical (inf); top-1 agreement 98.5%.",
        "SQNR per epoch: 14.9, inf, ? dB.",
        "Kept the weights of epoch 2 (best fidelity on the validation samples); 7 weight tensor(s) updated in the graph.",
        "Teacher: model.onnx; student: the graph's own weights.",
    ]  # fmt: skip
    assert describe_distill({"epochs_run": 1}) == ["Trained 1 epoch(s)."]


def test_cleanup_lines() -> None:
    summary = {
        "nodes_before": 33,
        "nodes_after": 22,
        "constant_nodes_lifted": 2,
        "batchnorm_folded": True,
        "opset": "11 -> 13",
        "dropped_steps": [{"step": "fuse_gelu", "reason": "the graph failed the checker."}],
    }
    assert describe_cleanup(summary) == [
        "33 -> 22 nodes (11 folded, fused or removed).",
        "2 Constant node(s) became initializers; BatchNormalization folded into the layers "
        "before it; opset 11 -> 13.",
        "Dropped step fuse_gelu: the graph failed the checker.",
    ]
    assert describe_cleanup({"nodes_before": 4, "nodes_after": 4, "opset": "13 -> 13"}) == [
        "Kept all 4 nodes (nothing to fold or remove).",
        "Opset 13 kept.",
    ]


def test_registry_hook_and_fallback() -> None:
    assert all(entry.describe for entry in PASSES.values())
    assert describe_summary("cleanup", {"nodes_before": 3, "nodes_after": 2}) == [
        "3 -> 2 nodes (1 folded, fused or removed)."
    ]
    assert describe_summary("not-a-pass", {"a": 1, "b": 2}) == [
        "2 figure(s) in the JSON report (--report)."
    ]
    # a hook failing on a summary it does not know must not fail the run
    assert describe_summary("prune", {"blocked": 3, "macs": "?"}) == [
        "2 figure(s) in the JSON report (--report)."
    ]
    assert describe_summary("cleanup", {}) == []


def test_cli_prints_lines_not_key_values(conv_bn_path: Path, tmp_path: Path, capsys) -> None:
    assert main(["optimize", str(conv_bn_path), "-o", str(tmp_path / "o.onnx")]) == 0
    out = capsys.readouterr().out
    assert "cleanup: 4 -> 2 nodes (2 folded, fused or removed).\n" in out
    assert "         BatchNormalization folded into the layers before it; opset 13 kept.\n" in out
    assert "nodes_before=" not in out and "=" not in out.replace("==", "")


def test_prune_distill_lines() -> None:
    summary = {
        "target_macs": 0.25,
        "macs_fraction": 0.247,
        "resumed_steps": 1,
        "steps": [
            {
                "step": 1,
                "macs": 6_720_000,
                "macs_fraction": 0.57,
                "params": 40_000,
                "fidelity": {"top1_agreement": 0.998, "sqnr_db": 18.24},
                "seconds": 40.2,
            },
            {"step": 2},
        ],
    }
    assert describe_summary("prune_distill", summary) == [
        "Pruned and distilled in 2 step(s) to 25% of the MACs (target 25%).",
        "Resumed 1 finished step(s) from the state file.",
        "  step 1: MACs 57% of the input (6.72M), params 40.00k, top-1 agreement 99.8%, "
        "SQNR 18.2 dB, 40 s",
        "  step 2: no figures",
    ]
