"""A whole training run: set-up, resume, the epoch loop, logging and checkpoints.

:func:`train` is the library entry point (``python -m zcproxy.train`` only parses flags and calls
it).  It runs unchanged alone on a CPU, on one GPU, or as one of many torchrun processes: every
process trains its shard of each global batch under DistributedDataParallel, and rank 0 alone
logs, writes the CSV and the checkpoints.  Resuming reads the checkpoint on every process (the
output folder must be on a filesystem all nodes see).

Files in the output folder: ``last.pth`` (every epoch), ``best.pth`` (best top-1 so far),
``log.csv`` (one row per epoch), ``curve.png`` (its plot), ``config.json`` (architecture, recipe and options).
"""
from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..atomic import write_text
from . import checkpoint as ckpt
from .arch import build_training_model, resolve_arch
from .data import EpochLoader, build_transforms, open_datasets, val_loader
from .distributed import DistEnv, barrier, broadcast_buffers, cleanup, gather_objects, setup
from .history import append_row, plot_curve, truncate_log
from .loop import (
    StepParts, evaluate, make_loss, make_mixup, make_optimizer, make_scaler, make_scheduler,
    train_one_epoch,
)
from .presets import TrainRecipe, get_preset

log = logging.getLogger("zcproxy.train")


@dataclass
class RunOptions:
    """How to run (not what to learn: that is the :class:`TrainRecipe`).

    ``resume``: a checkpoint path, or "auto" for ``<output>/last.pth`` when it exists.
    ``stop_after_epochs``: end this invocation after that many epochs (the run stays resumable).
    ``cifar_split_val``: fraction of CIFAR-10 training images held out for validation.
    ``crop_pct``: validation centre-crop fraction; None = 0.95 (image folders, EfficientFormerV2's
    value) or 1.0 (CIFAR-10, whose images are already tight crops).
    ``amp``: None = mixed precision on CUDA, off on CPU.
    """

    arch: str
    data: str
    preset: str | None = None
    output: str | None = None
    device: str | None = None
    seed: int = 0
    workers: int = 2
    resume: str | None = None
    eval_only: bool = False
    stop_after_epochs: int | None = None
    threads: int | None = None
    cifar_split_val: float | None = None
    crop_pct: float | None = None
    val_batch_size: int | None = None
    amp: bool | None = None
    progress: bool = True


@dataclass
class RunResult:
    output: Path
    epochs_done: int
    best_top1: float
    last: dict[str, float] = field(default_factory=dict)
    model: nn.Module | None = None  # the trained (or evaluated) network, unwrapped from DDP


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train(recipe: TrainRecipe | None, options: RunOptions,
          on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> RunResult:
    """Train (or with ``options.eval_only`` evaluate) ``options.arch`` with ``recipe``.

    ``recipe`` None means the preset named by ``options.preset`` (default: the architecture's own
    skeleton, s0/s1/s2).  ``on_epoch_end(epoch, row)`` is called on every process after each
    epoch's checkpoint is written (``epoch`` is 1-based).
    """
    if options.threads:
        torch.set_num_threads(options.threads)
    env = setup(options.device)
    try:
        return _train(recipe, options, env, on_epoch_end)
    finally:
        cleanup(env)


def _train(recipe: TrainRecipe | None, options: RunOptions, env: DistEnv,
           on_epoch_end: Callable | None) -> RunResult:
    arch, arch_name = resolve_arch(options.arch)
    preset = options.preset or arch.skeleton
    if recipe is None:
        recipe = get_preset(preset)
    output = Path(options.output or Path("runs") / f"{arch_name}_{preset}")

    if recipe.batch_size % env.world_size:
        raise ValueError(f"global batch size {recipe.batch_size} is not divisible by the "
                         f"{env.world_size} processes")
    per_process = recipe.batch_size // env.world_size
    if recipe.mixing and per_process % 2:
        raise ValueError(f"Mixup/CutMix needs an even batch per process, got {per_process}")

    datasets = open_datasets(options.data, options.cifar_split_val)
    crop_pct = options.crop_pct or datasets.eval_crop_pct
    datasets.set_transforms(*build_transforms(
        recipe.img_size, recipe.randaugment, recipe.random_erasing, datasets.mean, datasets.std,
        crop_scale=recipe.crop_scale, crop_pct=crop_pct, interpolation=recipe.interpolation))

    seed_everything(options.seed)  # same initial weights on every process
    model = build_training_model(arch, datasets.num_classes, recipe.img_size, recipe.drop_path,
                                 env.device)
    seed_everything(options.seed + env.rank)  # different augmentations per process
    experiment = {"arch": arch.to_dict(), "preset": preset, "recipe": recipe.to_dict(),
                  "seed": options.seed, "num_classes": datasets.num_classes}
    pin = env.device.type == "cuda"
    val_batches = val_loader(datasets.val, options.val_batch_size or per_process, env.rank,
                             env.world_size, options.workers, pin)
    scaler = make_scaler(env.device, options.amp)

    if options.eval_only:
        return _evaluate_only(model, options, experiment, val_batches, env, scaler is not None, output)

    train_batches = EpochLoader(datasets.train, per_process, env.rank, env.world_size,
                                options.seed, options.workers, pin)
    lr = recipe.scaled_lr()
    optimizer = make_optimizer(model, recipe, lr)
    scheduler = make_scheduler(optimizer, recipe, len(train_batches))
    start_epoch, best_top1, global_step = 0, float("-inf"), 0

    resume = options.resume
    if resume == "auto":
        resume = str(output / "last.pth") if (output / "last.pth").exists() else None
    if resume:
        state = ckpt.load(resume)
        ckpt.check_compatible(state, resume, experiment)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best_top1 = int(state["epoch"]), float(state["best_top1"])
        global_step = int(state["global_step"])
        rng = state.get("rng") or []
        if len(rng) == env.world_size:
            ckpt.restore_rng(rng[env.rank])
        else:
            log.warning("checkpoint %s was written by %d processes, this run has %d: random "
                        "streams restart from the seed (not bit-identical to an uninterrupted run)",
                        resume, len(rng), env.world_size)
            seed_everything(options.seed + env.rank + 1_000_003 * start_epoch)
        if env.is_main:
            log.info("resumed %s at epoch %d/%d (best top-1 %.2f%%)", resume, start_epoch,
                     recipe.epochs, best_top1)

    if env.distributed:
        ids = [env.device.index] if env.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    parts = StepParts(model, optimizer, make_loss(recipe), make_mixup(recipe, datasets.num_classes),
                      scaler, recipe.clip_grad, recipe.clip_mode, env.device)

    if env.is_main:
        output.mkdir(parents=True, exist_ok=True)
        truncate_log(output / "log.csv", start_epoch)
        _write_config(output / "config.json", experiment, options, env, lr, datasets.description)
        log.info("%s | %s | %d process(es) on %s | global batch %d, lr %.3g | %d steps/epoch",
                 arch_name, datasets.description, env.world_size, env.device, recipe.batch_size,
                 lr, len(train_batches))

    row: dict[str, float] = {}
    epochs_this_call = 0
    if start_epoch >= recipe.epochs and env.is_main:
        log.info("%s already holds all %d epochs; nothing to train", output, recipe.epochs)
    for epoch in range(start_epoch, recipe.epochs):
        if options.stop_after_epochs is not None and epochs_this_call >= options.stop_after_epochs:
            break
        stats = train_one_epoch(parts, train_batches.epoch(epoch), scheduler, global_step, env,
                                options.progress, desc=f"epoch {epoch + 1}/{recipe.epochs}")
        global_step = stats.global_step
        eval_start = time.perf_counter()
        broadcast_buffers(_unwrap(model), env)
        metrics = evaluate(_unwrap(model), val_batches, env.device, env, scaler is not None,
                           options.progress)
        seconds = stats.seconds + time.perf_counter() - eval_start
        row = {"epoch": epoch + 1, "lr": stats.lr, "train_loss": stats.loss,
               "val_loss": metrics["val_loss"], "top1": metrics["top1"], "top5": metrics["top5"],
               "images_per_s": stats.images_per_s, "seconds": seconds}
        improved = metrics["top1"] > best_top1
        best_top1 = max(best_top1, metrics["top1"])
        rng_states = gather_objects(ckpt.capture_rng(), env)
        if env.is_main:
            state = dict(experiment, format=ckpt.FORMAT, epoch=epoch + 1, best_top1=best_top1,
                         global_step=global_step, model=_unwrap(model).state_dict(),
                         optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                         scaler=scaler.state_dict() if scaler is not None else None,
                         rng=rng_states, world_size=env.world_size,
                         options=_jsonable(asdict(options)))
            append_row(output / "log.csv", row)
            plot_curve(output / "log.csv", output / "curve.png", f"{arch_name}, preset {preset}")
            ckpt.save_atomic(state, output / "last.pth")
            if improved:
                ckpt.save_atomic(state, output / "best.pth")
            log.info("epoch %d/%d  lr %.3g  train loss %.4f  val loss %.4f  top-1 %.2f%%  "
                     "top-5 %.2f%%  %.1f img/s  %.0f s", epoch + 1, recipe.epochs, stats.lr,
                     stats.loss, metrics["val_loss"], metrics["top1"], metrics["top5"],
                     stats.images_per_s, seconds)
        barrier(env)
        epochs_this_call += 1
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
        start_epoch = epoch + 1
    return RunResult(output, start_epoch, best_top1, row, _unwrap(model))


def _evaluate_only(model: nn.Module, options: RunOptions, experiment: dict, val_batches,
                   env: DistEnv, amp: bool, output: Path) -> RunResult:
    if options.resume == "auto":
        candidates = [output / "best.pth", output / "last.pth"]
        path = next((p for p in candidates if p.exists()), None)
        if path is None:
            raise ckpt.CheckpointError(f"--eval-only --resume auto: no checkpoint in {output} "
                                       f"(looked for {candidates[0].name}, {candidates[1].name})")
    elif options.resume:
        path = Path(options.resume)
    else:
        raise ValueError("--eval-only needs the checkpoint to evaluate: --resume PATH")
    state = ckpt.load(path)
    # any recipe may evaluate a checkpoint; only what shapes the network must agree
    ckpt.check_compatible(state, path, {k: experiment[k] for k in ("arch", "num_classes")})
    if state["recipe"]["img_size"] != experiment["recipe"]["img_size"]:
        raise ckpt.CheckpointError(
            f"checkpoint {path} was trained at img_size {state['recipe']['img_size']}, this run "
            f"evaluates at {experiment['recipe']['img_size']} (pass --img-size)")
    model.load_state_dict(state["model"])
    metrics = evaluate(model, val_batches, env.device, env, amp, options.progress)
    if env.is_main:
        log.info("%s (epoch %d): val loss %.4f  top-1 %.2f%%  top-5 %.2f%% on %d images", path,
                 state["epoch"], metrics["val_loss"], metrics["top1"], metrics["top5"], metrics["n"])
    return RunResult(path, int(state["epoch"]), float(state["best_top1"]), metrics, model)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _write_config(path: Path, experiment: dict, options: RunOptions, env: DistEnv, lr: float,
                  data: str) -> None:
    record = dict(experiment, options=_jsonable(asdict(options)), world_size=env.world_size,
                  device=str(env.device), scaled_lr=lr, data=data, torch=torch.__version__)
    write_text(path, json.dumps(_jsonable(record), indent=2, sort_keys=True) + "\n")
