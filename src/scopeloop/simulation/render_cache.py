"""An on-disk cache of rendered simulated images, so training runs do not render again.

A U-Net training run renders thousands of synthetic ``(image, labels)`` pairs
(minutes on two cores) before its first step, the stage classifier hundreds of
simulated-microscope frames (about ten minutes), and ``scopeloop tune`` and
``scopeloop evaluate`` render their images again on every call. Each sample is
fully determined by its job (seed, size, recipe or objective) and by the code
that draws it, so it is kept as one file under a key made of both: the code's
part is a hash of the source of the drawing module and of every module of this
package it imports, in turn (this module aside: :data:`CACHE_FORMAT` stands for
it), plus the numpy and scipy versions. Any change to them starts a fresh cache
instead of serving stale images.

The cache lives in ``$SCOPELOOP_CACHE_DIR`` (``off`` disables it), else in the
user's cache folder (``$XDG_CACHE_HOME/scopeloop``, ``~/.cache/scopeloop``; on
Windows ``%LOCALAPPDATA%\\scopeloop``; on macOS ``~/Library/Caches/scopeloop``).
About 70 KB per 256x256 image (210 MB for a 3,000-image training run).
``scopeloop cache`` lists what it holds; ``--prune`` frees the folders of
generator code that is no longer the installed one, ``--clear`` all of it.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import scipy
from numpy.typing import NDArray

from .synthetic import (
    TRAIN_RECIPE,
    Recipe,
    SyntheticSample,
    per_seed,
    render_in_processes,
    sample_of_job,
)

__all__ = [
    "CACHE_ENV",
    "CacheFolder",
    "cache_dir",
    "cache_folders",
    "cached_samples",
    "generator_fingerprint",
    "remove_cache_folders",
    "render_pairs_cached",
    "samples_cached",
]

#: environment variable naming the cache folder (``off`` disables caching)
CACHE_ENV = "SCOPELOOP_CACHE_DIR"
_PACKAGE = "scopeloop.simulation"
#: what a cache file holds and how (:func:`_write`, :func:`_read`): part of every key, in
#: place of this module's source, which draws nothing. Raise it when the file changes.
CACHE_FORMAT = 1

J = TypeVar("J")
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


def generator_modules(module: str) -> list[str]:
    """``module`` of this package and the package's modules it imports, in turn (sorted),
    but not this cache module (its part of the key is :data:`CACHE_FORMAT`)."""
    pkg = resources.files(_PACKAGE)
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or name == __name__.rsplit(".", 1)[-1]:
            continue  # the cache itself draws nothing: CACHE_FORMAT stands for it
        if not pkg.joinpath(f"{name}.py").is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(pkg.joinpath(f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                todo.append(node.module.split(".")[0])
    return sorted(seen)


@cache
def generator_fingerprint(module: str = "synthetic") -> str:
    """A short hash of the source of ``module`` and what it imports, and of numpy and scipy."""
    h = hashlib.sha256()
    pkg = resources.files(_PACKAGE)
    for name in generator_modules(module):
        h.update(name.encode())
        h.update(pkg.joinpath(f"{name}.py").read_bytes())
    h.update(f"numpy {np.__version__} scipy {scipy.__version__} format {CACHE_FORMAT}".encode())
    return h.hexdigest()[:16]


def _read(path: Path) -> SyntheticSample | None:
    try:  # opened here: np.load leaves a damaged file's handle open
        with open(path, "rb") as fh, np.load(fh) as f:
            stages = dict(zip(f["stage_ids"].tolist(), f["stage_values"].tolist(), strict=True))
            params = json.loads(str(f["params"]))
            return SyntheticSample(f["image"], f["labels"], stages, params)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # missing, or damaged (a disk that filled up): render it again


def _write(path: Path, s: SyntheticSample) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # written beside, then renamed: a reader never sees half a file, even with
    # several runs filling the same cache at once
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez_compressed(
            tmp, image=s.image, labels=s.labels,
            stage_ids=np.array(list(s.stages), np.int64),
            stage_values=np.array(list(s.stages.values()), np.int64),
            params=np.array(json.dumps(s.params)),
        )  # fmt: skip
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cached_samples(
    module: str,
    render: Callable[[J], SyntheticSample],
    jobs: Sequence[J],
    names: Sequence[str],
    workers: int = 1,
    root: Path | None = None,
) -> tuple[list[SyntheticSample], int]:
    """``[render(job) for job in jobs]``, from the cache where it can.

    Parameters
    ----------
    module : str
        The module of this package whose code draws the samples (with what it
        imports, it keys the cache).
    render : callable
        Draws one sample from one job (a module-level function: it may run in
        ``workers`` processes).
    jobs, names : sequences
        The jobs, and for each a relative file name fixed by the job alone
        (e.g. ``"256x256/<recipe hash>/17.npz"``).
    root : Path, optional
        The cache folder; :func:`cache_dir` when not given (which may say "off").

    Returns
    -------
    The samples, in the order of ``jobs``, and how many came from the cache.
    """
    if len(names) != len(jobs):
        raise ValueError(f"{len(names)} file names for {len(jobs)} jobs")
    folder = root if root is not None else cache_dir()
    if folder is None:
        return render_in_processes(render, jobs, workers), 0
    where = Path(folder) / "renders" / f"{module}-{generator_fingerprint(module)}"
    paths = [where / n for n in names]
    samples: list[SyntheticSample | None] = [_read(p) for p in paths]
    todo = [i for i, s in enumerate(samples) if s is None]
    if todo:
        fresh = render_in_processes(render, [jobs[i] for i in todo], workers)
        for i, sample in zip(todo, fresh, strict=True):
            samples[i] = sample
            # a full or read-only disk costs the next run time, not this one
            with contextlib.suppress(OSError):
                _write(paths[i], sample)
    return [s for s in samples if s is not None], len(jobs) - len(todo)


#: a key folder under ``<root>/renders``: ``<drawing module>-<16 hex digits>``
_KEY_FOLDER = re.compile(r"(?P<module>[a-z_][a-z0-9_]*)-(?P<fingerprint>[0-9a-f]{16})")


@dataclasses.dataclass(frozen=True)
class CacheFolder:
    """One key folder of the cache: the samples one version of one generator drew."""

    path: Path
    module: str
    fingerprint: str
    files: int
    bytes: int
    #: drawn by the installed generator code (the others are never read by it)
    current: bool


def cache_folders(root: Path | None = None) -> list[CacheFolder]:
    """The cache's key folders, sorted by path (none when the cache is off or empty)."""
    folder = root if root is not None else cache_dir()
    renders = Path(folder) / "renders" if folder is not None else None
    if renders is None or not renders.is_dir():
        return []
    out = []
    for path in sorted(renders.iterdir()):
        m = _KEY_FOLDER.fullmatch(path.name)
        if m is None or not path.is_dir():
            continue  # not ours: never counted, never removed
        sizes = [f.stat().st_size for f in path.rglob("*") if f.is_file()]
        module = m["module"]
        current = (
            resources.files(_PACKAGE).joinpath(f"{module}.py").is_file()
            and generator_fingerprint(module) == m["fingerprint"]
        )
        out.append(CacheFolder(path, module, m["fingerprint"], len(sizes), sum(sizes), current))
    return out


def remove_cache_folders(folders: Sequence[CacheFolder]) -> int:
    """Delete these key folders; returns the bytes freed."""
    freed = 0
    for f in folders:
        shutil.rmtree(f.path, ignore_errors=True)
        freed += f.bytes
    return freed


def _recipe_key(recipe: Recipe) -> str:
    text = json.dumps(dataclasses.asdict(recipe), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def samples_cached(
    seeds: Sequence[int],
    shape: tuple[int, int] = (256, 256),
    workers: int = 1,
    recipe: Recipe | Sequence[Recipe] = TRAIN_RECIPE,
    root: Path | None = None,
) -> tuple[list[SyntheticSample], int]:
    """The synthetic samples of ``seeds`` (with their stages and drawing parameters)
    through :func:`cached_samples`; also how many came from the cache."""
    recipes = per_seed(seeds, recipe)
    keys: dict[int, str] = {}  # by identity: one hash per distinct recipe object
    names = [
        f"{shape[0]}x{shape[1]}/{keys.setdefault(id(r), _recipe_key(r))}/{int(s)}.npz"
        for s, r in zip(seeds, recipes, strict=True)
    ]
    jobs = [(int(s), shape, r) for s, r in zip(seeds, recipes, strict=True)]
    return cached_samples("synthetic", sample_of_job, jobs, names, workers, root)


def render_pairs_cached(
    seeds: Sequence[int],
    shape: tuple[int, int] = (256, 256),
    workers: int = 1,
    recipe: Recipe | Sequence[Recipe] = TRAIN_RECIPE,
    root: Path | None = None,
) -> tuple[list[Pair], int]:
    """:func:`~scopeloop.simulation.synthetic.render_pairs` through :func:`cached_samples`.

    Returns the pairs (the same arrays ``render_pairs`` gives) and how many
    came from the cache.
    """
    samples, hits = samples_cached(seeds, shape, workers, recipe, root)
    return [(s.image, s.labels) for s in samples], hits
