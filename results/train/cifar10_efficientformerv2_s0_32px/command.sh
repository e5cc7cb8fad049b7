#!/bin/sh
# The committed short CPU run (resumable: run this script again after an interruption).
# Preset s0 (Table 2) with these overrides for a ~15-20 minute single-thread CPU run:
#   --img-size 32              CIFAR-10's native resolution (224 would be ~50x slower)
#   --epochs 20 --warmup-epochs 1   a short schedule instead of 300/20
#   --batch-size 64 --lr 0.016 global batch 64; 0.016 at the 1024 base batch scales to 1e-3
#   --mixup 0 --cutmix 0       mixing slows early learning far beyond a 20-epoch budget
#   --crop-scale 0.35 1        a 0.08-area crop of a 32x32 image keeps ~9x9 pixels
# Everything else (AdamW, wd 0.02, cosine, BCE, label smoothing 0.1, RandAugment m7-n1,
# AGC clipping 2.0, drop path 0.05, random erasing 0) is the s0 preset.
cd "$(dirname "$0")/../../.." && PYTHONPATH=. exec "${PYTHON:-.venv/bin/python}" -m zcproxy.train \
  --arch efficientformerv2_s0 --data ../shared/data/cifar10 --cifar-split-val 0.1 \
  --preset s0 --img-size 32 --epochs 20 --warmup-epochs 1 --batch-size 64 --lr 0.016 \
  --mixup 0 --cutmix 0 --crop-scale 0.35 1 \
  --device cpu --threads 1 --workers 0 --seed 0 --no-progress \
  --output results/train/cifar10_efficientformerv2_s0_32px --resume auto
