"""The run store: appendable OME-Zarr readable by external readers, gaps journaled, kill-safe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorstore as ts
import zarr

from scopeloop.storage import (
    DecisionLog,
    FrameRecord,
    ZarrRunStore,
    read_decisions,
    read_journal,
    write_run_info,
)


def _ts_read(path: Path) -> np.ndarray:
    arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(path)}}).result()
    return np.asarray(arr.read().result())


def frame(k: int) -> np.ndarray:
    return np.full((32, 48), 100 + k, dtype=np.uint16)


def test_frames_append_per_image_with_times_and_labels(tmp_path: Path) -> None:
    st = ZarrRunStore(tmp_path)
    for t in range(5):  # two images interleaved, as an adaptive plan does
        st.write_frame(FrameRecord("A1_timelapse", t, meta={"t_s": 60.0 * t}), frame(t))
        if t % 2 == 0:
            st.write_frame(
                FrameRecord("B1_timelapse", t // 2, pixel_size_um=0.65, meta={"t_s": 61.0 * t}),
                frame(10 + t),
            )
    st.write_frame(
        FrameRecord("A1_reimage", 0, c=1, z=2, size_c=2, size_z=3, channel_names=("FITC", "TRITC")),
        frame(99),
    )
    st.write_labels("A1_timelapse", 3, np.eye(32, 48, dtype=np.int32) * 7)
    st.record_missing("A1_timelapse", 5, 0, 0, "camera fault")
    st.close()

    a = _ts_read(tmp_path / "images" / "A1_timelapse.ome.zarr" / "0")
    assert a.shape == (5, 1, 1, 32, 48)
    assert [int(a[t, 0, 0, 0, 0]) for t in range(5)] == [100, 101, 102, 103, 104]
    b = _ts_read(tmp_path / "images" / "B1_timelapse.ome.zarr" / "0")
    assert b.shape[0] == 3 and int(b[2, 0, 0, 0, 0]) == 114
    r = _ts_read(tmp_path / "images" / "A1_reimage.ome.zarr" / "0")
    assert r.shape == (1, 2, 3, 32, 48) and int(r[0, 1, 2, 0, 0]) == 199
    lab = _ts_read(tmp_path / "images" / "A1_timelapse.ome.zarr" / "labels" / "cells" / "0")
    assert lab.shape == (4, 1, 1, 32, 48) and lab[3].max() == 7

    g = zarr.open_group(str(tmp_path / "images" / "B1_timelapse.ome.zarr"), mode="r")
    ome = g.attrs["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [ax["name"] for ax in ms["axes"]] == ["t", "c", "z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"][-1] == 0.65
    assert [f["t_s"] for f in g.attrs["scopeloop"]["frames"]] == [0.0, 122.0, 244.0]
    lg = zarr.open_group(str(tmp_path / "images" / "A1_timelapse.ome.zarr" / "labels"), mode="r")
    assert lg.attrs["ome"]["labels"] == ["cells"]

    journal = read_journal(tmp_path)
    assert sum(j["status"] == "written" for j in journal) == 9
    gaps = [j for j in journal if j["status"] == "missing"]
    assert gaps == [
        {
            "status": "missing",
            "image": "A1_timelapse",
            "t": 5,
            "c": 0,
            "z": 0,
            "reason": "camera fault",
        }
    ]


def test_wrong_frame_shape_or_index_is_an_error(tmp_path: Path) -> None:
    st = ZarrRunStore(tmp_path)
    st.write_frame(FrameRecord("A1_timelapse", 0), frame(0))
    with pytest.raises(ValueError, match="frame shape"):
        st.write_frame(FrameRecord("A1_timelapse", 1), np.zeros((8, 8), np.uint16))
    with pytest.raises(ValueError, match="outside its extent"):
        st.write_frame(FrameRecord("A1_timelapse", 1, c=3), frame(1))
    st.close()


_WRITER = """
import sys, time, numpy as np
from scopeloop.storage import ZarrRunStore, FrameRecord, DecisionLog
st = ZarrRunStore(sys.argv[1]); log = DecisionLog(sys.argv[1] + "/decisions.jsonl")
t = 0
while True:
    st.write_frame(FrameRecord("A1_timelapse", t, meta={"t_s": float(t)}),
                   np.full((64, 64), t % 60000, dtype=np.uint16))
    log.write({"t": t, "accepted": True})
    print(t, flush=True)
    t += 1
    time.sleep(0.002)
"""


def test_a_killed_writer_leaves_a_readable_store(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if int(line) >= 40 or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)  # no chance to close anything
    proc.wait(10)
    proc.stdout.close()
    journal = [j for j in read_journal(tmp_path) if j["status"] == "written"]
    assert len(journal) >= 40
    arr = _ts_read(tmp_path / "images" / "A1_timelapse.ome.zarr" / "0")
    assert arr.shape[0] >= len(journal)  # at most one frame resized but not yet journaled
    for j in journal:
        assert int(arr[j["t"], 0, 0, 0, 0]) == j["t"]
    assert len(read_decisions(tmp_path)) >= len(journal) - 1


def test_decision_log_and_run_info(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "decisions.jsonl")
    log.write({"accepted": True, "value": np.float32(1.5)})
    log.write({"accepted": False, "reason": "limit"})
    log.close()
    recs = read_decisions(tmp_path)
    assert recs[0]["value"] == 1.5 and recs[1]["reason"] == "limit"
    assert (log.n_accepted, log.n_refused) == (1, 1)
    info = write_run_info(tmp_path / "run.json", {"seed": 3})
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["seed"] == 3 and data["packages"]["zarr"] and info["python"]
