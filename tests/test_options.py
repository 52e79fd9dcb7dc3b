"""Declared pass options: real type checks in recipes, the report's echo, --help text."""

from __future__ import annotations

from pathlib import Path

import pytest

import onnxslim
from onnxslim import RecipeError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_plain_string_for_a_list_option_is_refused(tmp_path: Path) -> None:
    # used to become ['c', 'o', 'n', 'v', '1'] silently
    with pytest.raises(RecipeError) as error:
        onnxslim.load_recipe(write(tmp_path, '[[passes]]\nname = "prune"\nignore = "conv1"\n'))
    assert str(error.value) == (
        "option 'ignore' of pass 'prune' expects a list of str, got str 'conv1'."
    )
    with pytest.raises(RecipeError) as error:
        onnxslim.load_recipe(write(tmp_path, '[[passes]]\nname = "quantize"\nexclude = "conv1"\n'))
    assert str(error.value) == (
        "option 'exclude' of pass 'quantize' expects NoneType/a list of str, got str 'conv1'."
    )


def test_list_items_are_checked_and_kept(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as error:
        onnxslim.load_recipe(write(tmp_path, '[[passes]]\nname = "prune"\nignore = ["a", 3]\n'))
    assert str(error.value) == (
        "option 'ignore' of pass 'prune' expects a list of str, got list ['a', 3]."
    )
    recipe = onnxslim.load_recipe(
        write(tmp_path, '[[passes]]\nname = "prune"\nignore = ["conv1", "conv2"]\n')
    )
    assert list(recipe.passes[0].ignore) == ["conv1", "conv2"]


def test_int_refuses_bool_and_float_accepts_int(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as error:
        onnxslim.load_recipe(write(tmp_path, '[[passes]]\nname = "cleanup"\niterations = true\n'))
    assert str(error.value) == "option 'iterations' of pass 'cleanup' expects int, got bool True."
    recipe = onnxslim.load_recipe(write(tmp_path, '[[passes]]\nname = "prune"\nratio = 0\n'))
    assert recipe.passes[0].ratio == 0.0 and isinstance(recipe.passes[0].ratio, float)
    with pytest.raises(RecipeError) as error:
        onnxslim.load_recipe(write(tmp_path, '[[passes]]\nname = "cleanup"\ntarget_opset = 13.0\n'))
    assert str(error.value) == (
        "option 'target_opset' of pass 'cleanup' expects NoneType/int, got float 13.0."
    )


def test_validator_options_are_the_declared_fields() -> None:
    import dataclasses

    from onnxslim.passes import Cleanup
    from onnxslim.passes._cleanup_options import CleanupOptions
    from onnxslim.registry import get_options_class, get_pass_class

    fields = [field.name for field in dataclasses.fields(CleanupOptions)]
    assert (
        list(get_pass_class("cleanup").options())
        == fields
        == [
            "target_opset",
            "fold_constants",
            "fuse_batchnorm",
            "shape_inference",
            "iterations",
        ]
    )
    assert get_options_class("cleanup") is Cleanup.Options is CleanupOptions
    spec = Cleanup.options()["iterations"]
    assert (spec.annotation, spec.default) == (int, 3)
    assert spec.help == "rounds of the rewrite passes (stops early when stable)"


def test_options_come_from_the_declaration_only() -> None:
    import onnx_ir as ir

    from onnxslim import PassContext, SlimPass, SlimPassResult
    from onnxslim.options import option_specs
    from onnxslim.registry import PASSES, get_options_class, get_pass_class

    assert get_options_class("quantize") is not None  # quantize declares its options too
    specs = get_pass_class("quantize").options()
    assert specs["latency_batch"].default == 1 and specs["latency_batch"].annotation is int
    assert all(get_options_class(name) is not None for name in PASSES)  # every pass declares

    class KeywordOnly(SlimPass):
        name = "keyword-only"

        def __init__(self, factor: float = 1.0) -> None:
            super().__init__()
            self.factor = factor

        def apply(self, model: ir.Model, context: PassContext) -> SlimPassResult:
            return SlimPassResult(model, False)

    # an __init__ keyword is not an option: no second way to read them
    assert KeywordOnly.options() == {} == option_specs(KeywordOnly)
    assert KeywordOnly(2.0).config() == {}


def test_declared_options_echo_and_toml() -> None:
    from onnxslim._recipe import recipe_to_toml
    from onnxslim.passes import Cleanup
    from onnxslim.passes._cleanup_options import CleanupOptions

    cleanup = Cleanup(target_opset=13)
    assert cleanup.target_opset == 13 and cleanup.settings == CleanupOptions(target_opset=13)
    assert Cleanup(CleanupOptions(iterations=2)).iterations == 2
    assert cleanup.config() == {
        "target_opset": 13,
        "fold_constants": True,
        "fuse_batchnorm": True,
        "shape_inference": True,
        "iterations": 3,
    }
    assert recipe_to_toml([cleanup], onnxslim.Bounds(min_top1_agreement=0.9)) == (
        '[bounds]\nmin_top1_agreement = 0.9\n\n[[passes]]\nname = "cleanup"\n'
        "target_opset = 13\nfold_constants = true\nfuse_batchnorm = true\n"
        "shape_inference = true\niterations = 3\n"
    )
    with pytest.raises(TypeError, match="unexpected keyword argument 'opset'"):
        Cleanup(opset=13)


def test_declared_help_and_flag_in_optimize_help(capsys: pytest.CaptureFixture[str]) -> None:
    from onnxslim.cli import _passes_from_flags, build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["optimize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--opset N cleanup: upgrade to this opset during cleanup" in text
    args = build_parser().parse_args(["optimize", "m.onnx", "-o", "o.onnx", "--opset", "15"])
    assert _passes_from_flags(args)[0].config()["target_opset"] == 15
    # every pass's flags come from its declaration
    args = build_parser().parse_args(
        ["optimize", "m.onnx", "-o", "o.onnx", "--prune-macs", "0.5", "--opset", "13"]
    )
    cleanup, prune = _passes_from_flags(args)
    assert (cleanup.target_opset, prune.name, prune.target_macs) == (13, "prune", 0.5)


def test_every_declared_flag_is_in_optimize_help_with_its_help_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from onnxslim.cli import build_parser
    from onnxslim.options import option_specs
    from onnxslim.registry import get_options_class, pass_names

    with pytest.raises(SystemExit):
        build_parser().parse_args(["optimize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    flags = 0
    for name in pass_names():
        for spec in option_specs(get_options_class(name)).values():
            if spec.flag is not None:
                flags += 1
                assert spec.flag in text
                assert " ".join(f"{name}: {spec.help}".split()) in text
    assert (
        flags == 20
    )  # issue 17: --quant-metric, --quant-min-score, --qat-epochs; 15: --prune-latency


def test_flags_build_the_passes_the_declarations_name() -> None:
    from onnxslim.cli import _passes_from_flags, build_parser

    args = build_parser().parse_args(
        [
            "optimize", "m.onnx", "-o", "o.onnx", "--prune", "0.25", "--prune-round-to", "8",
            "--distill", "train.npz", "--distill-epochs", "2", "--distill-lr", "0.01",
            "--quantize", "int8", "--calibration", "calib.npz", "--calibration-method", "entropy",
            "--quant-exclude", "conv1", "--quant-exclude", "op:Softmax", "--no-latency-guard",
            "--latency-batch", "4",
        ]
    )  # fmt: skip
    cleanup, prune, distill, quantize = _passes_from_flags(args)
    assert (prune.ratio, prune.round_to) == (0.25, 8)
    assert (distill.data, distill.epochs, distill.lr) == ("train.npz", 2, 0.01)
    assert (quantize.method, list(quantize.exclude), quantize.latency_guard) == (
        "entropy",
        ["conv1", "op:Softmax"],
        False,
    )
    assert (quantize.accuracy_guard, quantize.latency_batch) == (True, 4)
    # --prune-round-to alone tunes pruning but does not add it to the pipeline
    args = build_parser().parse_args(
        ["optimize", "m.onnx", "-o", "o.onnx", "--prune-round-to", "8"]
    )
    assert [p.name for p in _passes_from_flags(args)] == ["cleanup"]


def test_describe_type_and_literal_choices() -> None:
    from typing import Literal

    from onnxslim.options import OptionSpec, check_value, describe_type

    assert describe_type(list[str] | None) == "NoneType/a list of str"
    assert describe_type(dict[str, int]) == "a table of int"
    spec = OptionSpec("method", Literal["minmax", "percentile"], "percentile")
    assert check_value("quantize", spec, "minmax") == "minmax"
    with pytest.raises(RecipeError) as error:
        check_value("quantize", spec, "max")
    assert str(error.value) == (
        "option 'method' of pass 'quantize' expects one of 'minmax', 'percentile', got str 'max'."
    )
    assert check_value("x", OptionSpec("t", tuple[int, ...]), (1, 2)) == [1, 2]
    assert check_value("x", OptionSpec("n", int | float), 3) == 3
    assert check_value("x", OptionSpec("n", float | None), None) is None


def test_keyword_options_get_the_recipe_type_checks():
    from onnxslim.passes.quantization import QuantizeStatic

    with pytest.raises(
        RecipeError, match=r"option 'eval_samples' of pass 'quantize' expects int, got str '32'\."
    ):
        QuantizeStatic(eval_samples="32")
    assert QuantizeStatic(exclude=("conv1",)).exclude == ["conv1"]


def test_prune_latency_flag_adds_prune_with_a_latency_target() -> None:
    from onnxslim.cli import _passes_from_flags, build_parser

    args = build_parser().parse_args(
        ["optimize", "m.onnx", "-o", "o.onnx", "--prune-latency", "0.6"]
    )
    passes = _passes_from_flags(args)
    prune = next(p for p in passes if p.name == "prune")
    assert prune.target_latency == 0.6 and prune.ratio is None and prune.target_macs is None
