#!/usr/bin/env bash
# The shipped segmenters on the one annotated real fluorescence image to be had from
# a package registry: the DSB2018 field (512x512, 125 nuclei; Caicedo et al. 2019)
# that StarDist's wheel carries. Needs PyPI, not StarDist or TensorFlow:
#
#   bash benchmarks/eval_real_image.sh [OUT_DIR [EVALUATE_OPTIONS...]]   (default: bench_results/dsb)
#
# Writes OUT_DIR/dsb/{images,labels}/img2d.tif and OUT_DIR/scores.json, and prints
# `scopeloop evaluate`'s table (U-Net, U-Net with flip averaging, classical). A spot
# check, not a benchmark: one image, nothing tuned on it.
set -euo pipefail
out=$(realpath -m "${1:-bench_results/dsb}")
mkdir -p "$out/wheel" "$out/dsb/images" "$out/dsb/labels"
python3 -m pip download -q --no-deps stardist==0.9.2 -d "$out/wheel"
python3 - "$out" <<'PY'
import sys, zipfile, pathlib
out = pathlib.Path(sys.argv[1])
wheel = next((out / "wheel").glob("stardist-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name, dest in (("img2d.tif", "images"), ("mask2d.tif", "labels")):
        data = z.read(f"stardist/data/images/{name}")
        (out / "dsb" / dest / "img2d.tif").write_bytes(data)
PY
scopeloop evaluate -s unet -s classical --tta --folder "$out/dsb" --device cpu \
    --json "$out/scores.json" "${@:2}"
