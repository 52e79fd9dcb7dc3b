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
        onnxslim.load_recipe(
            write(tmp_path, '[[passes]]\nname = "quantize"\nexclude = "conv1"\n')
        )
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
