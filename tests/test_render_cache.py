"""The on-disk cache of rendered synthetic images serves exactly what rendering gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scopeloop.simulation import render_cache
from scopeloop.simulation.render_cache import CACHE_ENV, cache_dir, render_pairs_cached
from scopeloop.simulation.synthetic import TRAIN_RECIPE, Recipe, render_pairs

SEEDS = [5, 6, 7]
SHAPE = (48, 48)


def _same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        x.dtype == y.dtype and np.array_equal(x, y)
        for p, q in zip(a, b, strict=True)
        for x, y in zip(p, q, strict=True)
    )


def test_second_run_is_served_from_the_cache_with_the_same_images(tmp_path: Path) -> None:
    first, hits = render_pairs_cached(SEEDS, SHAPE, 1, TRAIN_RECIPE, tmp_path)
    assert hits == 0 and len(list(tmp_path.rglob("*.npz"))) == 3
    again, hits = render_pairs_cached(SEEDS, SHAPE, 1, TRAIN_RECIPE, tmp_path)
    assert hits == 3
    assert _same(again, first) and _same(again, render_pairs(SEEDS, SHAPE, 1, TRAIN_RECIPE))
    # a run that shares only some seeds renders only the others, in the caller's order
    mixed, hits = render_pairs_cached([9, *SEEDS[:2]], SHAPE, 1, TRAIN_RECIPE, tmp_path)
    assert hits == 2 and _same(mixed[1:], first[:2])


def test_a_different_recipe_or_size_is_not_served_the_cached_images(tmp_path: Path) -> None:
    render_pairs_cached(SEEDS, SHAPE, 1, TRAIN_RECIPE, tmp_path)
    dense = Recipe(coverage=(0.3, 0.6))
    pairs, hits = render_pairs_cached(SEEDS, SHAPE, 1, dense, tmp_path)
    assert hits == 0 and _same(pairs, render_pairs(SEEDS, SHAPE, 1, dense))
    pairs, hits = render_pairs_cached(SEEDS, (40, 40), 1, TRAIN_RECIPE, tmp_path)
    assert hits == 0 and pairs[0][0].shape == (40, 40)
    # one recipe per seed: each image is keyed by its own
    per_seed = [TRAIN_RECIPE, dense, TRAIN_RECIPE]
    pairs, hits = render_pairs_cached(SEEDS, SHAPE, 1, per_seed, tmp_path)
    assert hits == 3 and _same(pairs, render_pairs(SEEDS, SHAPE, 1, per_seed))


def test_a_damaged_cache_file_is_rendered_again(tmp_path: Path) -> None:
    first, _ = render_pairs_cached(SEEDS, SHAPE, 1, TRAIN_RECIPE, tmp_path)
    damaged = sorted(tmp_path.rglob("6.npz"))[0]
    damaged.write_bytes(damaged.read_bytes()[:100])  # a run killed mid-write, a full disk
    pairs, hits = render_pairs_cached(SEEDS, SHAPE, 1, TRAIN_RECIPE, tmp_path)
    assert hits == 2 and _same(pairs, first)
    assert render_pairs_cached(SEEDS, SHAPE, 1, TRAIN_RECIPE, tmp_path)[1] == 3


def test_the_environment_chooses_or_disables_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    render_pairs_cached(SEEDS, SHAPE)
    assert len(list((tmp_path / "mine").rglob("*.npz"))) == 3
    monkeypatch.setenv(CACHE_ENV, "off")
    assert cache_dir() is None
    pairs, hits = render_pairs_cached(SEEDS, SHAPE)
    assert hits == 0 and _same(pairs, render_pairs(SEEDS, SHAPE))


def test_the_fingerprint_covers_every_module_the_generator_imports() -> None:
    # a drawing module left out of the key would let its changes serve stale images
    assert render_cache.generator_modules("synthetic") == ["nuclei", "optics", "synthetic"]
    micro = render_cache.generator_modules("microscope_set")
    assert {"microscope_set", "render", "specimen", "synthetic", "optics", "nuclei"} <= set(micro)
    # the cache's own code draws nothing: editing it must not throw the frames away
    assert "render_cache" not in micro
    assert render_cache.generator_fingerprint("microscope_set") != (
        render_cache.generator_fingerprint("synthetic")
    )


def test_microscope_frames_come_back_with_their_stages_and_parameters(tmp_path: Path) -> None:
    from scopeloop.simulation.microscope_set import microscope_samples

    first = microscope_samples("microscope_20x", 2, seed=3, shape=(64, 64))
    assert len(list(cache_dir().rglob("*.npz"))) == 2  # type: ignore[union-attr]
    again = microscope_samples("microscope_20x", 2, seed=3, shape=(64, 64))
    for a, b in zip(first, again, strict=True):
        assert a.image.dtype == b.image.dtype and np.array_equal(a.image, b.image)
        assert np.array_equal(a.labels, b.labels)
        assert a.stages == b.stages and a.params == b.params
    assert any(s.stages for s in first)  # not a test of two empty fields


def test_evaluation_sets_are_the_published_images_and_cached(tmp_path: Path) -> None:
    from scopeloop.evaluation.seg_eval import load_sets
    from scopeloop.simulation.synthetic import test_set

    sets = load_sets(["crowded"], 2, size=64, seed=1)
    expected = [(s.image, s.labels) for s in test_set("crowded", 2, (64, 64), draw=1)]
    assert _same(sets["crowded"], expected)
    assert len(list(cache_dir().rglob("*.npz"))) == 2  # type: ignore[union-attr]
    assert _same(load_sets(["crowded"], 2, size=64, seed=1)["crowded"], expected)


def test_cache_command_lists_and_frees_stale_folders_and_leaves_others_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from scopeloop.cli.main import app

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    render_pairs_cached([1, 2], (32, 32))  # two images by the installed generator
    stale = tmp_path / "renders" / "synthetic-0123456789abcdef" / "32x32"
    stale.mkdir(parents=True)
    (stale / "7.npz").write_bytes(b"x" * 5000)
    mine = tmp_path / "renders" / "my-notes"  # not a key folder: never touched
    mine.mkdir()
    (mine / "keep.txt").write_text("keep")

    listed = CliRunner().invoke(app, ["cache"])
    assert listed.exit_code == 0, listed.output
    assert "synthetic-0123456789abcdef" in listed.output and "stale" in listed.output
    assert "installed code" in listed.output and "my-notes" not in listed.output
    folders = render_cache.cache_folders(tmp_path)
    assert sorted((f.current, f.files) for f in folders) == [(False, 1), (True, 2)]

    pruned = CliRunner().invoke(app, ["cache", "--prune"])
    assert pruned.exit_code == 0 and "removed 1 folder" in pruned.output, pruned.output
    assert not stale.exists()
    _, hits = render_pairs_cached([1, 2], (32, 32))
    assert hits == 2  # the installed generator's images are still served

    cleared = CliRunner().invoke(app, ["cache", "--clear"])
    assert cleared.exit_code == 0 and "removed 1 folder" in cleared.output, cleared.output
    assert render_cache.cache_folders(tmp_path) == [] and (mine / "keep.txt").is_file()
    both = CliRunner().invoke(app, ["cache", "--prune", "--clear"])
    assert both.exit_code == 2 and "not both" in both.output
