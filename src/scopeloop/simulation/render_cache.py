"""An on-disk cache of rendered synthetic images, so training runs do not render again.

A U-Net training run renders thousands of ``(image, labels)`` pairs (minutes on
two cores) before its first step, and ``scopeloop tune`` renders the validation
images of a run again. Each pair is fully determined by its seed, its size, its
recipe and the generator's code, so it is kept as one file under a key made of
all four: the generator's part is a hash of the source of the modules that draw
the images and of the numpy and scipy versions, so any change to them starts a
fresh cache instead of serving stale images.

The cache lives in ``$SCOPELOOP_CACHE_DIR`` (``off`` disables it), else in the
user's cache folder (``$XDG_CACHE_HOME/scopeloop``, ``~/.cache/scopeloop``; on
Windows ``%LOCALAPPDATA%\\scopeloop``; on macOS ``~/Library/Caches/scopeloop``).
About 70 KB per 256x256 pair (210 MB for a 3,000-image run); delete the folder to
free it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import zipfile
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import scipy
from numpy.typing import NDArray

from .synthetic import TRAIN_RECIPE, Recipe, render_pairs

__all__ = ["CACHE_ENV", "cache_dir", "generator_fingerprint", "render_pairs_cached"]

#: environment variable naming the cache folder (``off`` disables caching)
CACHE_ENV = "SCOPELOOP_CACHE_DIR"
#: the modules whose code draws a synthetic image (synthetic.py and what it imports)
_GENERATOR_MODULES = ("synthetic.py", "nuclei.py", "optics.py")

Pair = tuple[NDArray[Any], NDArray[Any]]


def cache_dir() -> Path | None:
    """The cache's root folder, or None when ``$SCOPELOOP_CACHE_DIR`` is ``off``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() == "off":
        return None
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", "") or Path.home() / ".cache")
    return base / "scopeloop"


@cache
def generator_fingerprint() -> str:
    """A short hash of the generator's source code and the numeric libraries it uses."""
    h = hashlib.sha256()
    pkg = resources.files("scopeloop.simulation")
    for name in _GENERATOR_MODULES:
        h.update(name.encode())
        h.update(pkg.joinpath(name).read_bytes())
    h.update(f"numpy {np.__version__} scipy {scipy.__version__}".encode())
    return h.hexdigest()[:16]


def _recipe_key(recipe: Recipe) -> str:
    text = json.dumps(dataclasses.asdict(recipe), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _read(path: Path) -> Pair | None:
    try:  # opened here: np.load leaves a damaged file's handle open
        with open(path, "rb") as fh, np.load(fh) as f:
            return f["image"], f["labels"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # missing, or damaged (a disk that filled up): render it again


def _write(path: Path, pair: Pair) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # written beside, then renamed: a reader never sees half a file, even with
    # several runs filling the same cache at once
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, image=pair[0], labels=pair[1])
    os.replace(tmp, path)


def render_pairs_cached(
    seeds: Sequence[int],
    shape: tuple[int, int] = (256, 256),
    workers: int = 1,
    recipe: Recipe | Sequence[Recipe] = TRAIN_RECIPE,
    root: Path | None = None,
) -> tuple[list[Pair], int]:
    """:func:`~scopeloop.simulation.synthetic.render_pairs`, from the cache where it can.

    Parameters
    ----------
    seeds, shape, workers, recipe
        As for ``render_pairs`` (one recipe for all seeds or one per seed).
    root : Path, optional
        The cache folder; :func:`cache_dir` when not given (which may say "off").

    Returns
    -------
    The pairs (the same arrays ``render_pairs`` returns) and how many came from the cache.
    """
    recipes = [recipe] * len(seeds) if isinstance(recipe, Recipe) else list(recipe)
    if len(recipes) != len(seeds):
        raise ValueError(f"{len(recipes)} recipes for {len(seeds)} seeds")
    folder = root if root is not None else cache_dir()
    if folder is None:
        return render_pairs(seeds, shape, workers, recipes), 0
    where = Path(folder) / "renders" / generator_fingerprint() / f"{shape[0]}x{shape[1]}"
    keys = {id(r): _recipe_key(r) for r in recipes}
    paths = [where / keys[id(r)] / f"{int(s)}.npz" for s, r in zip(seeds, recipes, strict=True)]
    pairs: list[Pair | None] = [_read(p) for p in paths]
    todo = [i for i, p in enumerate(pairs) if p is None]
    if todo:
        fresh = render_pairs([seeds[i] for i in todo], shape, workers, [recipes[i] for i in todo])
        for i, pair in zip(todo, fresh, strict=True):
            pairs[i] = pair
            # a full or read-only disk costs the next run time, not this one
            with contextlib.suppress(OSError):
                _write(paths[i], pair)
    return [p for p in pairs if p is not None], len(seeds) - len(todo)
