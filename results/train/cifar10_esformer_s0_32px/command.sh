#!/bin/sh
# The searched ESFormer-S0 (results/search/s0/best.json) on the CIFAR-10 split, on the CPU.
# Same overrides as ../cifar10_efficientformerv2_s0_32px/command.sh (see its README), but a
# 10-epoch schedule: the machine was shared with four searches when this ran.
cd "$(dirname "$0")/../../.." && PYTHONPATH=. exec "${PYTHON:-.venv/bin/python}" -m zcproxy.train \
  --arch results/search/s0/best.json --data ../shared/data/cifar10 --cifar-split-val 0.1 \
  --preset s0 --img-size 32 --epochs 10 --warmup-epochs 1 --batch-size 64 --lr 0.016 \
  --mixup 0 --cutmix 0 --crop-scale 0.35 1 \
  --device cpu --threads 1 --workers 0 --seed 0 --no-progress \
  --output results/train/cifar10_esformer_s0_32px --resume auto
