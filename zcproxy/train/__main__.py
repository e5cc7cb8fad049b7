"""``python -m zcproxy.train``: parse the command line and call :func:`zcproxy.train.train`."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..cli import add_debug_flag, wants_traceback
from .checkpoint import CheckpointError
from .presets import PRESET_NAMES, get_preset
from .run import RunOptions, train

EXAMPLES = """\
examples:
  # EfficientFormerV2-S0 on ImageNet (train/ and val/ class folders), the paper's S0 recipe
  python -m zcproxy.train --arch efficientformerv2_s0 --data /data/imagenet --output runs/s0

  # a searched architecture on 8 GPUs of one node (the same command, under torchrun)
  torchrun --nproc_per_node 8 -m zcproxy.train --arch results/search/s1/best.json \\
      --data /data/imagenet --preset s1 --output runs/esformer_s1

  # two nodes of 8 GPUs (run on each node; NODE is 0 or 1, HOST is node 0's address)
  torchrun --nnodes 2 --node_rank NODE --nproc_per_node 8 --master_addr HOST --master_port 29500 \\
      -m zcproxy.train --arch efficientformerv2_s2 --data /data/imagenet --output /shared/runs/s2

  # continue an interrupted run (reads <output>/last.pth)
  python -m zcproxy.train --arch efficientformerv2_s0 --data /data/imagenet --output runs/s0 --resume auto

  # a short CPU run on the CIFAR-10 test batch, split 9,000 train / 1,000 val
  python -m zcproxy.train --arch efficientformerv2_s0 --data ../shared/data/cifar10 \\
      --cifar-split-val 0.1 --img-size 32 --epochs 10 --warmup-epochs 1 --batch-size 64 \\
      --threads 1 --device cpu --output runs/cifar

  # evaluate a checkpoint only
  python -m zcproxy.train --arch efficientformerv2_s0 --data /data/imagenet --eval-only \\
      --resume runs/s0/best.pth

The batch size is global (all processes together); the learning rate given by --lr is the rate
at --lr-base-batch images (1024) and is scaled linearly to the batch size actually used.
Each epoch writes <output>/last.pth, best.pth, log.csv, curve.png and config.json.
"""

# (flag, recipe field, type, help); each default comes from the preset (paper's Table 2)
RECIPE_FLAGS: list[tuple[str, str, type, str]] = [
    ("--epochs", "epochs", int, "training epochs"),
    ("--warmup-epochs", "warmup_epochs", int, "linear warm-up epochs before the cosine decay"),
    ("--batch-size", "batch_size", int, "global batch size, summed over all processes"),
    ("--lr", "lr", float, "learning rate at --lr-base-batch images per step"),
    ("--lr-base-batch", "lr_base_batch", int, "batch size at which --lr applies (linear scaling)"),
    ("--warmup-lr", "warmup_lr", float, "learning rate at the start of warm-up"),
    ("--min-lr", "min_lr", float, "learning rate at the end of the cosine decay"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay (not on biases/norms)"),
    ("--opt", "optimizer", str, "optimizer name understood by timm (adamw, sgd, lamb...)"),
    ("--sched", "sched", str, "schedule name understood by timm (cosine, step...)"),
    ("--clip-grad", "clip_grad", float, "gradient clipping threshold (<= 0: off)"),
    ("--clip-mode", "clip_mode", str, "gradient clipping mode: agc, norm or value"),
    ("--mixup", "mixup", float, "Mixup alpha (0: off)"),
    ("--cutmix", "cutmix", float, "CutMix alpha (0: off)"),
    ("--randaugment", "randaugment", str, "timm RandAugment string, e.g. rand-m7-n1 ('' : off)"),
    ("--random-erasing", "random_erasing", float, "random-erasing probability"),
    ("--drop-path", "drop_path", float, "stochastic-depth rate of the last block"),
    ("--label-smoothing", "label_smoothing", float, "label smoothing"),
    ("--loss", "loss", str, "training loss: bce (binary cross-entropy) or ce"),
    ("--img-size", "img_size", int, "input resolution, a multiple of 32"),
    ("--interpolation", "interpolation", str, "resize interpolation: bicubic, bilinear, ..."),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m zcproxy.train",
        description="Train an ESFormer / EfficientFormerV2 network with the ESFormer paper's "
                    "ImageNet recipe (Table 2: AdamW, cosine, BCE, Mixup/CutMix, RandAugment, ...). "
                    "Runs alone on CPU or GPU, or under torchrun on many GPUs and nodes.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("what to train")
    what.add_argument("--arch", required=True,
                      help="architecture JSON file (e.g. results/search/s1/best.json) or a baseline: "
                           "efficientformerv2_s0, efficientformerv2_s1, efficientformerv2_s2")
    what.add_argument("--data", required=True,
                      help="an image folder with train/ and val/ class folders (ImageNet layout), "
                           "or CIFAR-10 python batches (cifar-10-batches-py or a folder holding it)")
    what.add_argument("--preset", choices=PRESET_NAMES,
                      help="Table 2 recipe to start from (default: the architecture's size s0/s1/s2)")
    what.add_argument("--cifar-split-val", type=float, metavar="FRAC",
                      help="hold out FRAC of the CIFAR-10 training images (or of test_batch when it "
                           "is the only batch) as a class-stratified, fixed validation split")

    recipe = parser.add_argument_group("recipe overrides (default: the preset's value)")
    s0, s2 = get_preset("s0"), get_preset("s2")
    for flag, field, kind, text in RECIPE_FLAGS:
        a, b = getattr(s0, field), getattr(s2, field)
        preset_value = f"preset: {a!r}" if a == b else f"preset s0/s1: {a!r}, s2: {b!r}"
        recipe.add_argument(flag, dest=field, type=kind, default=None,
                            metavar={int: "N", float: "X", str: "NAME"}[kind],
                            help=f"{text} ({preset_value})")
    recipe.add_argument("--crop-scale", dest="crop_scale", type=float, nargs=2, metavar=("MIN", "MAX"),
                        help="area range of the random-resized crop (default 0.08 1.0)")

    run = parser.add_argument_group("running")
    run.add_argument("--output", help="output folder (default runs/<arch>_<preset>)")
    run.add_argument("--resume", metavar="PATH",
                     help="checkpoint to continue from, or 'auto' for <output>/last.pth if present")
    run.add_argument("--eval-only", action="store_true",
                     help="only evaluate the --resume checkpoint on the validation set")
    run.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--workers", type=int, default=2, help="data-loading processes per process (default 2)")
    run.add_argument("--threads", type=int, help="torch CPU threads per process (default: torch's)")
    run.add_argument("--stop-after-epochs", type=int, metavar="N",
                     help="stop this invocation after N epochs; continue later with --resume auto")
    run.add_argument("--val-batch-size", type=int, help="validation batch per process (default: training's)")
    run.add_argument("--crop-pct", type=float,
                     help="validation centre-crop fraction (default 0.95; 1.0 for CIFAR-10)")
    amp = run.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None,
                     help="mixed precision (default: on with CUDA)")
    amp.add_argument("--no-amp", dest="amp", action="store_false", help="full float32 precision")
    run.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bars (for log files)")
    add_debug_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout)
    fields = {field: getattr(args, field) for _, field, _, _ in RECIPE_FLAGS}
    fields["crop_scale"] = tuple(args.crop_scale) if args.crop_scale else None
    options = RunOptions(
        arch=args.arch, data=args.data, preset=args.preset, output=args.output, device=args.device,
        seed=args.seed, workers=args.workers, resume=args.resume, eval_only=args.eval_only,
        stop_after_epochs=args.stop_after_epochs, threads=args.threads,
        cifar_split_val=args.cifar_split_val, crop_pct=args.crop_pct,
        val_batch_size=args.val_batch_size, amp=args.amp, progress=args.progress)
    try:
        preset = args.preset
        if preset is None:
            from .arch import resolve_arch
            preset = resolve_arch(args.arch)[0].skeleton
        recipe = get_preset(preset).override(**fields)
        train(recipe, options)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        if wants_traceback(args.debug):
            raise
        from ..cli import one_line
        parser.exit(2, f"error: {one_line(err)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
