"""Recipes: TOML pipelines; unknown passes, keys and options are errors that list valid ones."""

from __future__ import annotations

from pathlib import Path

import pytest

import onnxslim
from onnxslim import RecipeError
from onnxslim._recipe import recipe_to_toml
from onnxslim.passes import Cleanup


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_recipe_builds_passes_and_bounds(tmp_path: Path) -> None:
    recipe = onnxslim.load_recipe(
        write(
            tmp_path,
            """
num_samples = 2
[bounds]
min_sqnr_db = 25
[sizes]
batch = 2
[[passes]]
name = "cleanup"
target_opset = 13
""",
        )
    )
    assert len(recipe.passes) == 1 and isinstance(recipe.passes[0], Cleanup)
    assert recipe.passes[0].target_opset == 13
    assert (
        recipe.bounds.min_sqnr_db == 25.0
        and recipe.sizes == {"batch": 2}
        and recipe.num_samples == 2
    )


def test_unknown_pass_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(
        RecipeError,
        match=r"unknown pass 'clenup' \(did you mean 'cleanup'\?\); valid passes: cleanup, prune",
    ):
        onnxslim.load_recipe(write(tmp_path, '[[passes]]\nname = "clenup"\n'))


def test_unknown_option_lists_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(
        RecipeError,
        match="unknown option 'opset' for pass 'cleanup'; valid options: target_opset, fold_constants",
    ):
        onnxslim.load_recipe(write(tmp_path, '[[passes]]\nname = "cleanup"\nopset = 13\n'))


def test_wrong_option_type(tmp_path: Path) -> None:
    with pytest.raises(
        RecipeError,
        match="option 'target_opset' of pass 'cleanup' expects NoneType/int, got str '13'",
    ):
        onnxslim.load_recipe(write(tmp_path, '[[passes]]\nname = "cleanup"\ntarget_opset = "13"\n'))
    with pytest.raises(
        RecipeError, match="option 'fold_constants' of pass 'cleanup' expects bool, got int 1"
    ):
        onnxslim.load_recipe(write(tmp_path, '[[passes]]\nname = "cleanup"\nfold_constants = 1\n'))


def test_unknown_top_level_key_and_bound(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"unknown key\(s\) \['pases'\]"):
        onnxslim.load_recipe(write(tmp_path, '[[pases]]\nname = "cleanup"\n'))
    with pytest.raises(RecipeError, match=r"unknown bound\(s\) \['sqnr'\]"):
        onnxslim.load_recipe(write(tmp_path, '[bounds]\nsqnr = 3\n[[passes]]\nname = "cleanup"\n'))


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="not valid TOML"):
        onnxslim.load_recipe(write(tmp_path, "[[passes]\nname = \n"))
    with pytest.raises(RecipeError, match="recipe file not found"):
        onnxslim.load_recipe(tmp_path / "none.toml")
    with pytest.raises(RecipeError, match=r"needs at least one \[\[passes\]\]"):
        onnxslim.load_recipe(write(tmp_path, "num_samples = 3\n"))


def test_recipe_round_trip(tmp_path: Path) -> None:
    text = recipe_to_toml(
        [Cleanup(target_opset=15, iterations=2)], onnxslim.Bounds(min_sqnr_db=20.0)
    )
    recipe = onnxslim.load_recipe(write(tmp_path, text))
    assert recipe.passes[0].config() == Cleanup(target_opset=15, iterations=2).config()
    assert recipe.bounds.min_sqnr_db == 20.0


def test_one_pass_table() -> None:
    import onnxslim.passes
    from onnxslim.registry import PASSES, get_pass_class, get_pass_hook, pass_names

    assert pass_names() == [
        "cleanup",
        "prune",
        "distill",
        "prune_distill",
        "quantize",
        "quantize_int4",
    ]
    assert onnxslim.passes.__all__ == [
        "Cleanup",
        "StructuredPrune",
        "Distill",
        "PruneDistill",
        "QuantizeStatic",
        "QuantizeWeightsInt4",
    ]
    for name, entry in PASSES.items():
        pass_class = get_pass_class(name)
        assert pass_class.name == name
        assert getattr(onnxslim.passes, entry.class_name) is pass_class
    groups = get_pass_hook("prune", "groups")
    assert groups.__name__ == "dependency_groups"
    with pytest.raises(RecipeError, match=r"pass 'cleanup' has no 'groups' hook; it has: \[\]"):
        get_pass_hook("cleanup", "groups")
