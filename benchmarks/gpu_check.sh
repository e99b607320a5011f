#!/usr/bin/env bash
# The CUDA half of the segmentation checks and figures, in one command:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR [BENCH_OPTIONS...]]   (default: bench_results/cuda)
#
# BENCH_OPTIONS go to `scopeloop bench segmentation` (e.g. `-s unet` to leave out
# the classical pipeline, which runs on the host and takes a minute there).
#
# Runs from a source checkout (nothing installed) on a machine whose python3
# has a CUDA build of PyTorch with NumPy, SciPy, scikit-image, typer and
# pytest, as in the usual PyTorch images. The few pure-Python packages such
# images lack (pydantic and pydantic-core, annotated-types, typing-inspection,
# typing-extensions, useq-schema, shapely) are installed from a folder of
# wheels named by SCOPELOOP_WHEELS when it is set; nothing is downloaded.
#
# Writes: gpu.txt (the device), tests.log (the U-Net and training tests, CUDA
# ones included), segmentation.json and bench_segmentation.log (frames per second
# and latency at 512x512 and 2048x2048, batch 1 and batched, plain, with flip
# averaging, and binned for 68-pixel nuclei), unet_stages.log and .json (where a
# frame's time goes, each speed-up timed against what it replaced). Exit status 1
# if any step failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd) || exit 1
out=$(realpath -m "${1:-$root/bench_results/cuda}")
mkdir -p "$out" && cd "$root" || exit 1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [[ -n "${SCOPELOOP_WHEELS:-}" ]]; then
    site=$(mktemp -d)
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" \
        "$SCOPELOOP_WHEELS"/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:$site"
fi
python3 - <<'PY' 2>&1 | tee "$out/gpu.txt" || exit 1
import torch
assert torch.cuda.is_available(), "PyTorch sees no CUDA device"
print("torch", torch.__version__, "CUDA", torch.version.cuda, "on", torch.cuda.get_device_name())
PY
rc=0
# conftest.py builds the simulated microscope (pymmcore-plus); these tests need none of it.
# The CPU compilation test is left out (a minute of C++ builds, nothing about the GPU); the
# CUDA test compares compiled and eager extraction on the GPU itself.
python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_unet.py tests/test_training.py \
    --deselect tests/test_unet.py::test_compiled_extraction_gives_the_same_labels 2>&1 \
    | tee "$out/tests.log" || rc=1
python3 -m scopeloop bench segmentation --device cuda --tta --nucleus-diameter 68 \
    --out "$out" "${@:2}" 2>&1 | tee "$out/bench_segmentation.log" || rc=1
python3 benchmarks/unet_stages.py --device cuda --out "$out/unet_stages.json" 2>&1 \
    | tee "$out/unet_stages.log" || rc=1
exit $rc
