#!/usr/bin/env bash
# The CUDA half of the segmentation checks and figures, in one command:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR [BENCH_OPTIONS...]]   (default: bench_results/cuda)
#
# BENCH_OPTIONS go to `scopeloop bench segmentation` (e.g. `-s unet` to leave out
# the classical pipeline, which runs on the host and takes a minute there).
#
# Runs from a source checkout, nothing installed (see _gpu_env.sh; SCOPELOOP_WHEELS
# names a folder of the pure-Python wheels a PyTorch image lacks).
#
# Writes: gpu.txt (the device), tests.log (the U-Net and training tests, CUDA
# ones included), segmentation.json and bench_segmentation.log (frames per second
# and latency at 512x512 and 2048x2048, batch 1 and batched, plain, with flip
# averaging, and binned for 68-pixel nuclei), unet_stages.log and .json (where a
# frame's time goes, each speed-up timed against what it replaced, and CUDA graphs,
# cuDNN's benchmark mode and a compiled network beside the plain path), auto_diameter.log
# and .json (the U-Net measuring the nuclei itself, against the frames as they are, on
# crowded small nuclei and on radii 22-66 px). Exit status 1 if any step failed.
set -uo pipefail
out=$(realpath -m "${1:-$(dirname "$0")/../bench_results/cuda}")
source "$(dirname "$0")/_gpu_env.sh"
mkdir -p "$out" || exit 1
python3 - <<'PY' 2>&1 | tee "$out/gpu.txt" || exit 1
import torch
assert torch.cuda.is_available(), "PyTorch sees no CUDA device"
print("torch", torch.__version__, "CUDA", torch.version.cuda, "on", torch.cuda.get_device_name())
PY
rc=0
# conftest.py builds the simulated microscope (pymmcore-plus); these tests need none of it.
# The CPU compilation test is left out (a minute of C++ builds, nothing about the GPU); the
# CUDA test compares compiled and eager extraction on the GPU itself.
# (without conftest.py the tests would share the user's render cache: they render afresh)
SCOPELOOP_CACHE_DIR=off python3 -m pytest -q -p no:cacheprovider --noconftest \
    tests/test_unet.py tests/test_training.py \
    --deselect tests/test_unet.py::test_compiled_extraction_gives_the_same_labels 2>&1 \
    | tee "$out/tests.log" || rc=1
python3 -m scopeloop bench segmentation --device cuda --tta --nucleus-diameter 68 \
    --out "$out" "${@:2}" 2>&1 | tee "$out/bench_segmentation.log" || rc=1
python3 benchmarks/unet_stages.py --device cuda --out "$out/unet_stages.json" 2>&1 \
    | tee "$out/unet_stages.log" || rc=1
SCOPELOOP_CACHE_DIR=off python3 benchmarks/auto_diameter.py --device cuda --sets crowded \
    --n-images 12 --out "$out/auto_diameter.json" 2>&1 | tee "$out/auto_diameter.log" || rc=1
exit $rc
