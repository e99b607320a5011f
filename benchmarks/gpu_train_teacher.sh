#!/usr/bin/env bash
# A wider U-Net trained on a GPU from the shipped weights, to distil back into the
# shipped width on any machine afterwards:
#
#   bash benchmarks/gpu_train_teacher.sh OUT_DIR [MINUTES [TRAIN_OPTIONS...]]
#
# MINUTES (default 7) is the training budget; rendering the 3,000 synthetic images
# before it takes about a minute on 16 cores. TRAIN_OPTIONS go to `scopeloop train`
# after the defaults below and override them. Runs from a source checkout, nothing
# installed (see _gpu_env.sh). Writes OUT_DIR/unet.pt and unet.json (about 16 MB of
# float16 weights at channels 32-512) and train.log. Then, here or on the GPU:
#
#   scopeloop evaluate -s unet --weights OUT_DIR/unet.pt --n-images 100
#   scopeloop train --what unet --init src/scopeloop/analysis/weights/unet.pt \
#       --teacher OUT_DIR/unet.pt --distill 0.5 --out distilled ...
set -uo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 OUT_DIR [MINUTES [TRAIN_OPTIONS...]]" >&2; exit 2; }
out=$(realpath -m "$1")
minutes=${2:-7}
source "$(dirname "$0")/_gpu_env.sh"
mkdir -p "$out" || exit 1
python3 -m scopeloop train --what unet --device cuda \
    --init src/scopeloop/analysis/weights/unet.pt --channels 32,64,128,256,512 \
    --n-images 3000 --batch 64 --lr 0.0005 --steps 200000 --minutes "$minutes" \
    --eval-every 500 --patience 40 --seed 12 --out "$out" "${@:3}" 2>&1 | tee "$out/train.log"
