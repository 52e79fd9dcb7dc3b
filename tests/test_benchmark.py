"""onnxslim.benchmark: real ORT sessions on small Conv/MatMul models, float and QDQ int8."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import onnxslim
from onnxslim.benchmark import (
    GATE_EXIT_CODE,
    Gates,
    benchmark,
    check_gates,
    int8_coverage,
    machine_info,
)
from onnxslim.benchmark._cli import build_parser, run_bench
from onnxslim.benchmark._runner import MemoryProbe
from onnxslim.fidelity import FidelityBounds

CONV_MACS = 8 * 8 * 8 * (3 * 3 * 3)  # per sample: 8 out channels x 8x8 pixels x (3 in x 3x3)
MATMUL_MACS = 512 * 10
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def _conv_matmul_model(path: Path, *, with_matmul: bool = True, noise: float = 0.0) -> Path:
    """x[N,3,8,8] -> Conv(8, 3x3) -> Relu -> Flatten -> MatMul(512x10) -> y[N,10]."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    projection = rng.standard_normal((512, 10)).astype(np.float32) * 0.1
    projection += noise * np.random.default_rng(1).standard_normal(projection.shape).astype(
        np.float32
    )
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"]),
    ]
    initializers = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")]
    if with_matmul:
        nodes += [
            helper.make_node("Flatten", ["relu"], ["flat"]),
            helper.make_node("MatMul", ["flat", "W2"], ["y"], name="matmul"),
        ]
        initializers.append(numpy_helper.from_array(projection, "W2"))
        output = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    else:
        nodes.append(helper.make_node("Identity", ["relu"], ["y"]))
        output = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 8, 8])
    graph = helper.make_graph(
        nodes,
        "conv_matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [output],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


class _Reader(CalibrationDataReader):
    def __init__(self) -> None:
        rng = np.random.default_rng(2)
        self.samples = iter(
            [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
        )

    def get_next(self):
        return next(self.samples, None)


def _quantize(source: Path, target: Path, activation_type=QuantType.QUInt8, exclude=()) -> Path:
    quantize_static(
        str(source),
        str(target),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=activation_type,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude),
    )
    return target


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bench")
    float_model = _conv_matmul_model(folder / "float.onnx")
    conv_only = _conv_matmul_model(folder / "conv_only.onnx", with_matmul=False)
    return {
        "float": float_model,
        "int8": _quantize(float_model, folder / "int8.onnx"),
        "mixed": _quantize(float_model, folder / "mixed.onnx", exclude=["matmul"]),
        "noisy": _conv_matmul_model(folder / "noisy.onnx", noise=1.0),
        "conv_only": conv_only,
        "conv_int16": _quantize(
            conv_only, folder / "conv_int16.onnx", activation_type=QuantType.QInt16
        ),
    }


@pytest.fixture(scope="module")
def gate_result(models):
    return benchmark(
        [models["float"], models["int8"], models["noisy"]],
        providers="cpu",
        runs=6,
        warmup=1,
        batch_sizes=[4],
        fidelity_samples=4,
        coverage=False,
    )


# ---------------------------------------------------------------- int8 coverage


def test_coverage_qdq_fused_into_integer_kernels(models):
    coverage = int8_coverage(models["int8"], "cpu")
    assert coverage.macs_per_kernel == {"QLinearConv": CONV_MACS, "QLinearMatMul": MATMUL_MACS}
    assert coverage.integer_share == 1.0
    assert coverage.verdict == "int8"


def test_coverage_partly_quantized_model_is_mixed(models):
    matmul_inputs = next(
        n.input for n in onnx.load(models["mixed"]).graph.node if n.op_type == "MatMul"
    )
    assert "W2" in matmul_inputs  # excluded from quantization: float weight, no DequantizeLinear
    coverage = int8_coverage(models["mixed"], "cpu")
    assert (coverage.integer_macs, coverage.float_macs) == (CONV_MACS, MATMUL_MACS)
    assert coverage.integer_share == pytest.approx(CONV_MACS / (CONV_MACS + MATMUL_MACS))
    assert coverage.verdict == "mixed"


def test_coverage_int16_qdq_conv_runs_as_fake_quant(models):
    # ORT's CPU EP has no int16 convolution: DQ -> Conv(float) -> Q stays, i.e. fake-quantization
    coverage = int8_coverage(models["conv_int16"], "cpu")
    assert coverage.integer_macs == 0
    assert coverage.fake_quant_macs == coverage.float_macs == CONV_MACS
    assert coverage.verdict == "fake-quant"


def test_coverage_without_qdq_fusion_level_is_fake_quant(models):
    # at 'basic' ORT does not run the QDQ fusions, so the int8 model multiplies in float
    coverage = int8_coverage(models["int8"], "cpu", optimization_level="basic")
    assert coverage.macs_per_kernel == {"Conv": CONV_MACS, "MatMul": MATMUL_MACS}
    assert coverage.verdict == "fake-quant"


def test_coverage_float_model_counts_macs_at_the_batch_given(models):
    coverage = int8_coverage(models["float"], "cpu", sizes={"N": 3})
    assert coverage.total_macs == 3 * (CONV_MACS + MATMUL_MACS)  # NCHWc padding is not counted
    assert coverage.verdict == "float"


# ---------------------------------------------------------------- figures


def test_benchmark_figures_per_model_and_batch(models):
    result = benchmark(
        [models["float"], models["int8"]], providers="cpu", runs=5, warmup=1, batch_sizes=[1, 2]
    )
    assert [(m.model, m.batch) for m in result.measurements] == [
        ("float", 1),
        ("int8", 1),
        ("float", 2),
        ("int8", 2),
    ]
    for m in result.measurements:
        latency = m.latency
        assert latency.runs == len(m.latencies_ms) == 5
        assert (
            latency.min_ms <= latency.p50_ms <= latency.p90_ms <= latency.p99_ms <= latency.max_ms
        )
        assert latency.mean_ms == pytest.approx(np.mean(m.latencies_ms))
        assert m.throughput_per_s == pytest.approx(m.batch * 1000.0 / latency.mean_ms)
        assert m.file_size_bytes == onnxslim.model_file_size(m.path)
        assert m.session_create_s > 0 and m.session_memory_bytes is not None
        assert m.io_binding is False and m.gpu_memory_bytes in (None, 0)
    reference, candidate = result.find("float", batch=2), result.find("int8", batch=2)
    assert reference.latency_ratio is None and math.isinf(reference.fidelity.sqnr_db)
    assert candidate.latency_ratio.pairs == 5
    assert candidate.size_ratio == pytest.approx(
        onnxslim.model_file_size(models["int8"]) / onnxslim.model_file_size(models["float"])
    )
    assert candidate.coverage.verdict == "int8" and reference.coverage.verdict == "float"
    # fidelity equals an independent comparison of the two models' ORT outputs on the same inputs
    model = onnxslim.load(models["float"])
    feeds = [onnxslim.random_inputs(model, seed=i, batch=2) for i in range(4)]
    sessions = [
        ort.InferenceSession(str(models[k]), providers=["CPUExecutionProvider"])
        for k in ("float", "int8")
    ]
    expected = onnxslim.compare_outputs(
        [{"y": sessions[0].run(None, f)[0]} for f in feeds],
        [{"y": sessions[1].run(None, f)[0]} for f in feeds],
    )
    assert candidate.fidelity.sqnr_db == pytest.approx(expected.sqnr_db, rel=1e-6)
    assert candidate.fidelity.top1_agreement == expected.top1_agreement
    assert result.settings["allow_spinning"] is False and result.settings["interleaved"] is True


def test_same_model_twice_gets_distinct_labels_and_identical_outputs(models):
    result = benchmark([models["float"], models["float"]], runs=3, warmup=0, coverage=False)
    assert [m.model for m in result.measurements] == ["float", "float#2"]
    twin = result.find("float#2")
    assert twin.fidelity.max_abs_error == 0.0 and twin.size_ratio == 1.0


def test_data_reader_inputs_and_user_metric(models):
    rng = np.random.default_rng(5)
    data = [{"x": rng.standard_normal((3, 3, 8, 8)).astype(np.float32)} for _ in range(2)]

    def mean_abs_logit_gap(reference, candidate):
        return float(
            np.mean([np.abs(r["y"] - c["y"]).mean() for r, c in zip(reference, candidate)])
        )

    result = benchmark(
        [models["float"], models["noisy"]],
        data=data,
        runs=3,
        warmup=0,
        metric=mean_abs_logit_gap,
        coverage=False,
    )
    noisy = result.find("noisy")
    assert noisy.batch == 3 and noisy.metric_name == "mean_abs_logit_gap"
    sessions = [
        ort.InferenceSession(str(models[k]), providers=["CPUExecutionProvider"])
        for k in ("float", "noisy")
    ]
    expected = np.mean(
        [np.abs(sessions[0].run(None, d)[0] - sessions[1].run(None, d)[0]).mean() for d in data]
    )
    assert noisy.metric_value == pytest.approx(expected, rel=1e-6)
    with pytest.raises(onnxslim.SlimError, match="batch sizes apply to generated inputs"):
        benchmark([models["float"]], data=data, batch_sizes=[2])


def test_time_budget_runs_at_least_three_rounds(models):
    result = benchmark([models["float"]], time_budget_s=0.05, warmup=0, coverage=False)
    assert result.measurements[0].latency.runs >= 3 and result.settings["runs"] is None


def test_fixed_batch_dim_rejects_other_batch_sizes(tmp_path):
    model = onnx.parser.parse_model(
        '<ir_version: 8, opset_import: ["" : 13]> g (float[2,4] x) => (float[2,4] y) { y = Relu(x) }'
    )
    onnx.save(model, tmp_path / "fixed.onnx")
    with pytest.raises(onnxslim.InputDataError, match="input 'x' has a fixed batch dim 2"):
        benchmark([tmp_path / "fixed.onnx"], batch_sizes=[3])


def test_memory_probe_sees_an_allocation():
    probe = MemoryProbe().start()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB, touched
    probe.stop()
    del block
    assert probe.increase >= 60 * 1024 * 1024


def test_machine_info_matches_cpuinfo_and_ort():
    info = machine_info()
    assert info.onnxruntime_version == ort.__version__
    assert info.available_providers == ort.get_available_providers()
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    assert set(info.int8_isa) == {
        f
        for f in ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")
        if f in flags
    }


# ---------------------------------------------------------------- providers


@pytest.mark.skipif(
    HAS_CUDA, reason="CUDA is available here; the missing-provider error cannot be provoked"
)
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_unavailable_provider_is_an_error_listing_available_ones(models, provider, capsys):
    with pytest.raises(
        onnxslim.ProviderError,
        match=f"'{provider}' is not available.*available: .*CPUExecutionProvider",
    ):
        benchmark([models["float"]], providers=["cpu", provider], runs=1)
    args = build_parser().parse_args([str(models["float"]), "--providers", provider])
    assert run_bench(args) == 2
    error_line = capsys.readouterr().err.strip()
    assert error_line.startswith("error: ") and "CPUExecutionProvider" in error_line


@pytest.mark.skipif(
    not HAS_CUDA, reason="needs onnxruntime-gpu and a CUDA device (CUDAExecutionProvider absent)"
)
def test_cuda_uses_iobinding_and_reports_device_memory(models):
    result = benchmark([models["float"], models["int8"]], providers="cuda", runs=5, warmup=2)
    for m in result.measurements:
        assert m.provider == "CUDAExecutionProvider" and m.io_binding is True
        assert m.gpu_memory_bytes is not None
    assert result.find("int8").coverage.integer_share is not None


# ---------------------------------------------------------------- gates


def _only(result, *labels):
    return dataclasses.replace(
        result, measurements=[m for m in result.measurements if m.model in labels]
    )


def test_gate_max_latency_ratio(gate_result):
    ratio = gate_result.find("int8").latency_ratio.median
    subset = _only(gate_result, "float", "int8")
    assert check_gates(subset, Gates(max_latency_ratio=ratio)) == []
    (reason,) = check_gates(subset, Gates(max_latency_ratio=ratio * 0.99))
    assert reason.startswith(f"int8 on CPU batch 4: latency ratio {ratio:.3f} > ")


def test_gate_min_sqnr(gate_result):
    sqnr = gate_result.find("int8").fidelity.sqnr_db
    subset = _only(gate_result, "float", "int8")
    assert check_gates(subset, Gates(fidelity=FidelityBounds(min_sqnr_db=sqnr - 0.1))) == []
    (reason,) = check_gates(subset, Gates(fidelity=FidelityBounds(min_sqnr_db=sqnr + 0.1)))
    assert reason == f"int8 on CPU batch 4: SQNR {sqnr:.1f} dB < {sqnr + 0.1:g} dB vs float"


def test_gate_min_top1_agreement(gate_result):
    int8_top1 = gate_result.find("int8").fidelity.top1_agreement
    noisy_top1 = gate_result.find("noisy").fidelity.top1_agreement
    assert noisy_top1 < int8_top1  # a 10x weight perturbation flips more argmaxes than int8
    assert (
        check_gates(
            _only(gate_result, "float", "int8"),
            Gates(fidelity=FidelityBounds(min_top1_agreement=int8_top1)),
        )
        == []
    )
    (reason,) = check_gates(
        _only(gate_result, "float", "noisy"),
        Gates(fidelity=FidelityBounds(min_top1_agreement=int8_top1)),
    )
    assert (
        reason == f"noisy on CPU batch 4: top-1 agreement {noisy_top1:.4f} < {int8_top1:g} vs float"
    )


def test_gate_max_size_ratio(gate_result):
    size_ratio = gate_result.find("int8").size_ratio
    assert size_ratio < 0.5  # int8 weights
    subset = _only(gate_result, "float", "int8")
    assert check_gates(subset, Gates(max_size_ratio=0.5)) == []
    (reason,) = check_gates(subset, Gates(max_size_ratio=size_ratio / 2))
    assert reason.startswith(f"int8 on CPU batch 4: file size ratio {size_ratio:.3f} > ")


def test_gates_need_a_candidate(models):
    result = benchmark([models["float"]], runs=1, warmup=0, coverage=False)
    with pytest.raises(onnxslim.SlimError, match="at least two models"):
        check_gates(result, Gates(fidelity=FidelityBounds(min_sqnr_db=30)))


# ---------------------------------------------------------------- CLI and reports


def test_cli_prints_table_and_writes_json_and_html(models, tmp_path, capsys):
    json_path, html_path = tmp_path / "bench.json", tmp_path / "bench.html"
    args = build_parser().parse_args(
        [
            str(models["float"]),
            str(models["int8"]),
            "--providers",
            "cpu",
            "--runs",
            "4",
            "--warmup",
            "1",
            "--json",
            str(json_path),
            "--html",
            str(html_path),
            "--max-size-ratio",
            "0.9",
        ]
    )
    assert run_bench(args) == 0
    out = capsys.readouterr().out
    assert "| model | provider | batch | p50 ms |" in out
    assert re.search(r"^\| float \| CPU \| 1 \| .* \| ref \|", out, re.M)
    assert re.search(r"^\| int8 \| CPU \| 1 \| .*100\.0% int8 \(int8\) \|$", out, re.M)
    report = json.loads(json_path.read_text())
    assert report["schema_version"] == 1 and report["reference"] == "float"
    assert [m["model"] for m in report["measurements"]] == ["float", "int8"]
    assert set(report["measurements"][1]) >= {
        "latency_ms",
        "throughput_per_s",
        "session_create_s",
        "file_size_bytes",
        "session_memory_bytes",
        "latency_ratio",
        "fidelity",
        "int8_coverage",
        "latencies_ms",
        "gpu_memory_bytes",
    }
    assert report["measurements"][1]["int8_coverage"]["integer_macs"] == CONV_MACS + MATMUL_MACS
    page = html_path.read_text()
    assert page.count("<svg") == 3 and "<script" not in page
    assert not re.search(
        r"""(src|href)\s*=|url\(|@import""", page
    )  # nothing fetched: opens offline


def test_cli_gate_failure_exits_4_with_one_line_reason(models, tmp_path, capsys):
    args = build_parser().parse_args(
        [
            str(models["float"]),
            str(models["int8"]),
            "--runs",
            "2",
            "--warmup",
            "0",
            "--no-coverage",
            "--json",
            str(tmp_path / "b.json"),
            "--html",
            str(tmp_path / "b.html"),
            "--min-sqnr",
            "200",
        ]
    )
    assert run_bench(args) == GATE_EXIT_CODE == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gate failed: int8 on CPU batch 1: SQNR ")


def test_cli_parses_shapes_and_provider_options():
    args = build_parser().parse_args(
        [
            "m.onnx",
            "--shape",
            "x=1x3x224x224",
            "--shape",
            "seq=128",
            "--provider-option",
            "cuda:device_id=1",
        ]
    )
    assert dict(args.shape) == {"x": [1, 3, 224, 224], "seq": 128}
    assert args.provider_option == [("cuda", "device_id", "1")]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["m.onnx", "--shape", "x:1x3"])


def _browser() -> str | None:
    return next(
        (
            shutil.which(name)
            for name in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(name)
        ),
        None,
    )


@pytest.mark.skipif(_browser() is None, reason="no headless browser (chromium) installed")
def test_html_report_renders_in_headless_browser(gate_result, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(gate_result.to_html())
    completed = subprocess.run(
        [
            _browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    dom = completed.stdout
    assert (
        dom.count("<svg") == 3 and dom.count('class="box"') == 3 and dom.count('class="point"') == 3
    )
    console_errors = [
        line for line in completed.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line
    ]
    assert console_errors == []


def test_coverage_total_equals_model_stats_macs(models):
    model = onnxslim.load(models["float"])
    stats = onnxslim.model_stats(model, sizes={"N": 2})
    assert int8_coverage(models["float"], "cpu", sizes={"N": 2}).total_macs == stats.macs
    assert int8_coverage(models["int8"], "cpu", sizes={"N": 2}).integer_macs == stats.macs


def test_onnxslim_bench_command(models, tmp_path, capsys):
    from onnxslim.cli import main

    json_path, html_path = tmp_path / "r.json", tmp_path / "r.html"
    code = main(
        [
            "bench",
            str(models["float"]),
            str(models["int8"]),
            "--providers",
            "cpu",
            "--runs",
            "3",
            "--json",
            str(json_path),
            "--html",
            str(html_path),
        ]
    )
    assert code == 0 and json_path.is_file() and html_path.is_file()
    assert "| int8 | CPU | 1 |" in capsys.readouterr().out
    if not HAS_CUDA:
        assert main(["bench", str(models["float"]), "--providers", "cuda"]) == 2
        assert "available: " in capsys.readouterr().err


# ---------------------------------------------------------------- JSON edge and module layout


def test_records_keep_floats_and_json_writes_inf_and_nan_as_strings(models):
    def not_a_number(reference, candidate):
        return float("nan")

    result = benchmark(
        [models["float"], models["float"]], runs=2, warmup=0, coverage=False, metric=not_a_number
    )
    twin = result.find("float#2")
    assert math.isinf(twin.fidelity.sqnr_db) and math.isnan(twin.metric_value)  # floats stay floats
    record = result.record()["measurements"][1]
    assert math.isinf(record["fidelity"]["sqnr_db"]) and math.isnan(record["metric"]["value"])
    written = json.loads(result.to_json())["measurements"][1]
    assert written["fidelity"]["sqnr_db"] == "inf"
    assert written["metric"] == {"name": "not_a_number", "value": "nan"}  # was null: one encoding
    assert written["fidelity"]["max_abs_error"] == 0.0
    assert result.to_dict() == json.loads(result.to_json())


def test_json_value_encodes_every_non_finite_float():
    from onnxslim._json import json_safe  # the benchmark's JSON edge (was _records._json_value)

    value = {"a": [math.inf, -math.inf, math.nan, np.float32(1.5)], "b": (2, None, "x")}
    assert json_safe(value) == {"a": ["inf", "-inf", "nan", 1.5], "b": [2, None, "x"]}


def test_report_does_not_import_the_result_module():
    """The reports render the records; only BenchmarkResult (in _results) imports the reports."""
    import ast

    import onnxslim.benchmark._records as records
    import onnxslim.benchmark._report as report

    for module, forbidden in ((report, "_results"), (records, "_report")):
        tree = ast.parse(Path(module.__file__).read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module is not None
        }
        assert f"onnxslim.benchmark.{forbidden}" not in imported
