"""OME-Zarr (NGFF 0.5, zarr v3) written frame by frame, for runs whose shape is not known.

An adaptive run cannot say in advance how many frames a position will get
(bursts add frames, triage removes them), so every image is *appendable*: its
``t`` axis grows by one each time a new time point arrives. Each write resizes
the array (rewriting its small ``zarr.json``) before the chunk is stored, so
whatever the moment a run is killed, the store on disk is a valid OME-Zarr
holding every frame written so far.

Layout of a run folder::

    images/<position>_<mode>.ome.zarr/     one NGFF image per position and mode
        zarr.json                          ome.multiscales + scopeloop.frames (times)
        0/                                 array (t, c, z, y, x)
        labels/cells/0/                    instance labels (t, 1, 1, y, x), int32
    frames.jsonl                           the frame journal

The frame journal has one line per frame written (or planned and not
delivered: ``"status": "missing"``), so a gap reads as a gap, never as the
zeros a reader sees in an unwritten chunk.

Why not ome-writers: 0.3.2 supports one unbounded (first) dimension, but each
stream writes frames in one fixed order set up front; here frames of many
images interleave as decisions change the plan, labels arrive later from
another thread, and per-frame times must be kept in the image's attributes.
zarr 3 directly with NGFF 0.5 metadata does all of that in a few lines.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import BloscCodec

from .jsonl import read_jsonl, to_jsonable

__all__ = ["FrameRecord", "ZarrRunStore", "read_journal"]

NGFF_VERSION = "0.5"


@dataclass(frozen=True)
class FrameRecord:
    """Where one frame goes and what is known about it.

    ``t``, ``c``, ``z`` index the frame in its image; ``size_c``/``size_z``
    fix the image's channel and z extent (set by its first frame).
    """

    image: str
    t: int
    c: int = 0
    z: int = 0
    size_c: int = 1
    size_z: int = 1
    channel_names: tuple[str, ...] = ("",)
    pixel_size_um: float = 1.0
    z_step_um: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)


class _Image:
    def __init__(
        self, path: Path, rec: FrameRecord, shape_yx: tuple[int, int], dtype: np.dtype[Any]
    ) -> None:
        self.path = path
        self.group = zarr.open_group(str(path), mode="w", zarr_format=3)
        y, x = shape_yx
        self.array = self.group.create_array(
            "0",
            shape=(0, rec.size_c, rec.size_z, y, x),
            chunks=(1, 1, 1, y, x),
            dtype=dtype,
            fill_value=0,
            dimension_names=("t", "c", "z", "y", "x"),
            compressors=BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle"),
        )
        self.size_t = 0
        self.frames: list[dict[str, Any]] = []
        self.labels: zarr.Array[Any] | None = None
        self.labels_t = 0
        scale = [1.0, 1.0, rec.z_step_um, rec.pixel_size_um, rec.pixel_size_um]
        self.group.attrs.update(
            {
                "ome": {
                    "version": NGFF_VERSION,
                    "multiscales": [_multiscale(path.stem, scale)],
                    "omero": {
                        "channels": [
                            {"label": n, "active": True, "color": "FFFFFF"}
                            for n in rec.channel_names
                        ]
                    },
                },
                "scopeloop": {"frames": []},
            }
        )
        self.scale = scale

    def ensure_t(self, t: int) -> None:
        if t >= self.size_t:
            shape = list(self.array.shape)
            shape[0] = t + 1
            self.array.resize(tuple(shape))
            self.size_t = t + 1

    def ensure_labels(self, t: int, shape_yx: tuple[int, int]) -> zarr.Array[Any]:
        if self.labels is None:
            lg = self.group.require_group("labels")
            lg.attrs.update({"ome": {"version": NGFF_VERSION, "labels": ["cells"]}})
            cg = lg.create_group("cells")
            cg.attrs.update(
                {
                    "ome": {
                        "version": NGFF_VERSION,
                        "multiscales": [_multiscale("cells", self.scale)],
                        "image-label": {"source": {"image": "../../"}},
                    }
                }
            )
            y, x = shape_yx
            self.labels = cg.create_array(
                "0",
                shape=(0, 1, 1, y, x),
                chunks=(1, 1, 1, y, x),
                dtype="int32",
                fill_value=0,
                dimension_names=("t", "c", "z", "y", "x"),
                compressors=BloscCodec(cname="lz4", clevel=1, shuffle="shuffle"),
            )
        if t >= self.labels_t:
            self.labels.resize((t + 1, 1, 1, *self.labels.shape[3:]))
            self.labels_t = t + 1
        return self.labels


def _multiscale(name: str, scale: list[float]) -> dict[str, Any]:
    return {
        "name": name,
        "axes": [
            {"name": "t", "type": "time", "unit": "second"},
            {"name": "c", "type": "channel"},
            {"name": "z", "type": "space", "unit": "micrometer"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        ],
    }


class ZarrRunStore:
    """Frame-by-frame OME-Zarr writer for one run.

    Thread-safe: frames come from the acquisition thread, labels from the
    analysis thread. Every write is on disk when the call returns.

    Parameters
    ----------
    run_dir : Path
        The run folder; images go to ``run_dir/images``, the journal to
        ``run_dir/frames.jsonl``.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.images_dir = self.run_dir / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._images: dict[str, _Image] = {}
        self._journal = (self.run_dir / "frames.jsonl").open("a", encoding="utf-8")
        self.frames_written = 0
        self.frames_missing = 0
        self.labels_written = 0
        self.write_s_total = 0.0
        self.closed = False

    def image_path(self, image: str) -> Path:
        """Folder of the OME-Zarr image called ``image``."""
        return self.images_dir / f"{image}.ome.zarr"

    @property
    def image_names(self) -> list[str]:
        with self._lock:
            return list(self._images)

    def _journal_line(self, rec: dict[str, Any]) -> None:
        self._journal.write(json.dumps(rec, default=to_jsonable) + "\n")
        self._journal.flush()

    def write_frame(self, rec: FrameRecord, frame: NDArray[Any]) -> None:
        """Store one camera frame at ``(rec.t, rec.c, rec.z)`` of image ``rec.image``."""
        if frame.ndim != 2:
            raise ValueError(f"write_frame needs a 2-D frame, got shape {frame.shape}")
        t0 = time.perf_counter()
        with self._lock:
            if self.closed:
                raise RuntimeError("the run store is closed")
            img = self._images.get(rec.image)
            if img is None:
                img = _Image(self.image_path(rec.image), rec, frame.shape, frame.dtype)
                self._images[rec.image] = img
            if not (0 <= rec.c < img.array.shape[1] and 0 <= rec.z < img.array.shape[2]):
                raise ValueError(
                    f"image {rec.image!r}: frame index c={rec.c}, z={rec.z} is outside its "
                    f"extent c<{img.array.shape[1]}, z<{img.array.shape[2]}"
                )
            if frame.shape != img.array.shape[3:]:
                raise ValueError(
                    f"image {rec.image!r}: frame shape {frame.shape} differs from the "
                    f"image's {img.array.shape[3:]}"
                )
            img.ensure_t(rec.t)
            img.array[rec.t, rec.c, rec.z] = frame
            entry = {"t": rec.t, "c": rec.c, "z": rec.z, **rec.meta}
            img.frames.append(entry)
            # per-frame acquisition times and stage positions live with the image
            img.group.attrs["scopeloop"] = {"frames": img.frames}
            self._journal_line({"status": "written", "image": rec.image, **entry})
            self.frames_written += 1
            self.write_s_total += time.perf_counter() - t0

    def write_labels(self, image: str, t: int, labels: NDArray[Any]) -> None:
        """Store the instance labels of time point ``t`` of ``image`` beside it."""
        with self._lock:
            if self.closed:
                return  # late analysis result after the run ended: nothing to add to
            img = self._images.get(image)
            if img is None:
                raise KeyError(f"no image {image!r} in this run")
            arr = img.ensure_labels(t, labels.shape)
            arr[t, 0, 0] = labels.astype(np.int32, copy=False)
            self._journal_line({"status": "labels", "image": image, "t": t})
            self.labels_written += 1

    def record_missing(self, image: str, t: int, c: int, z: int, reason: str) -> None:
        """Journal a planned frame that never arrived (e.g. a camera fault)."""
        with self._lock:
            if self.closed:
                return
            self._journal_line(
                {"status": "missing", "image": image, "t": t, "c": c, "z": z, "reason": reason}
            )
            self.frames_missing += 1

    def close(self) -> None:
        """Finish the journal; the images are already complete on disk."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._journal.close()


def read_journal(run_dir: str | Path) -> list[dict[str, Any]]:
    """Parse ``frames.jsonl`` of a run (a torn last line from a kill is ignored)."""
    return read_jsonl(Path(run_dir) / "frames.jsonl")
