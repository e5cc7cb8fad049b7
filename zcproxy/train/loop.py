"""One optimisation step, one training epoch, and evaluation, built from timm's parts.

The recipe's pieces come from timm: AdamW via ``create_optimizer_v2`` (no weight decay on
biases, norms and attention-bias tables, as EfficientFormerV2), the warm-up + cosine schedule
via ``create_scheduler_v2`` stepped every update (so a short warm-up is smooth, not one epoch at
``warmup_lr``), ``Mixup`` (which then also applies the label smoothing), ``BinaryCrossEntropy``,
and ``dispatch_clip_grad``.  Mixed precision (float16 autocast + GradScaler) is used on CUDA only.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn

from .distributed import DistEnv, all_reduce_sum
from .presets import TrainRecipe


@dataclass
class StepParts:
    """What a training step needs besides the batch."""

    model: nn.Module                       # possibly DistributedDataParallel-wrapped
    optimizer: torch.optim.Optimizer
    loss_fn: nn.Module
    mixup: object | None                   # timm.data.Mixup or None
    scaler: torch.amp.GradScaler | None    # CUDA mixed precision only
    clip_grad: float
    clip_mode: str
    device: torch.device

    @property
    def amp(self) -> bool:
        return self.scaler is not None


def make_loss(recipe: TrainRecipe) -> nn.Module:
    """The training loss.  With Mixup/CutMix on, targets arrive already smoothed and mixed."""
    smoothing = 0.0 if recipe.mixing else recipe.label_smoothing
    if recipe.loss == "bce":
        from timm.loss import BinaryCrossEntropy
        return BinaryCrossEntropy(smoothing=smoothing)
    return nn.CrossEntropyLoss(label_smoothing=smoothing)


def make_mixup(recipe: TrainRecipe, num_classes: int):
    if not recipe.mixing:
        return None
    from timm.data import Mixup
    return Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix,
                 label_smoothing=recipe.label_smoothing, num_classes=num_classes)


def make_optimizer(model: nn.Module, recipe: TrainRecipe, lr: float) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2, param_groups_weight_decay
    no_decay = [n for n, _ in model.named_parameters() if "attention_biases" in n]
    groups = param_groups_weight_decay(model, recipe.weight_decay, no_weight_decay_list=no_decay)
    return create_optimizer_v2(groups, opt=recipe.optimizer, lr=lr, weight_decay=recipe.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: TrainRecipe, steps_per_epoch: int):
    from timm.scheduler import create_scheduler_v2
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=recipe.sched, num_epochs=recipe.epochs, warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.warmup_lr, min_lr=recipe.min_lr, step_on_epochs=False,
        updates_per_epoch=steps_per_epoch)
    return scheduler


def make_scaler(device: torch.device, amp: bool | None) -> torch.amp.GradScaler | None:
    """A GradScaler when mixed precision is on (default: on CUDA); None on CPU."""
    use = device.type == "cuda" if amp is None else amp
    if use and device.type != "cuda":
        raise ValueError(f"mixed precision needs a CUDA device, not {device}")
    return torch.amp.GradScaler("cuda") if use else None


def _autocast(parts_device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.float16) if amp and parts_device.type == "cuda" else nullcontext()


def train_step(parts: StepParts, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One update on one batch; returns the (detached) loss before the update."""
    from timm.utils import dispatch_clip_grad
    parts.model.train()
    images = images.to(parts.device, non_blocking=True)
    targets = targets.to(parts.device, non_blocking=True)
    if parts.mixup is not None:
        images, targets = parts.mixup(images, targets)
    with _autocast(parts.device, parts.amp):
        loss = parts.loss_fn(parts.model(images), targets)
    parts.optimizer.zero_grad(set_to_none=True)
    params = [p for p in parts.model.parameters() if p.requires_grad]
    if parts.scaler is not None:
        parts.scaler.scale(loss).backward()
        if parts.clip_grad > 0:
            parts.scaler.unscale_(parts.optimizer)
            dispatch_clip_grad(params, parts.clip_grad, mode=parts.clip_mode)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        loss.backward()
        if parts.clip_grad > 0:
            dispatch_clip_grad(params, parts.clip_grad, mode=parts.clip_mode)
        parts.optimizer.step()
    return loss.detach()


@dataclass
class EpochStats:
    loss: float
    lr: float
    images: int        # over all processes
    seconds: float
    global_step: int

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


def train_one_epoch(parts: StepParts, batches: Iterable, scheduler, global_step: int,
                    env: DistEnv, progress: bool = False, desc: str = "") -> EpochStats:
    """Every batch of one epoch; the learning rate is set from the global step before each update,
    so it is a pure function of the step and a resumed run follows the same schedule."""
    from tqdm.auto import tqdm
    start = time.perf_counter()
    total = torch.zeros((), dtype=torch.float64, device=parts.device)
    n_batches = n_images = 0
    bar = tqdm(batches, desc=desc, leave=False, disable=not (progress and env.is_main),
               dynamic_ncols=True)
    for images, targets in bar:
        scheduler.step_update(global_step)
        loss = train_step(parts, images, targets)
        global_step += 1
        total += loss.double()
        n_batches += 1
        n_images += len(images)
        if n_batches % 10 == 0:
            bar.set_postfix(loss=f"{total.item() / n_batches:.4f}")
    if parts.device.type == "cuda":
        torch.cuda.synchronize(parts.device)
    seconds = time.perf_counter() - start
    loss_sum, batches_sum, images_sum = all_reduce_sum([total.item(), n_batches, n_images], env)
    return EpochStats(loss_sum / max(batches_sum, 1), parts.optimizer.param_groups[0]["lr"],
                      int(images_sum), seconds, global_step)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable, device: torch.device, env: DistEnv,
             amp: bool = False, progress: bool = False) -> dict[str, float]:
    """Cross-entropy loss, top-1 and top-5 accuracy (%) over every shard of the validation set.

    Pass the *unwrapped* model: each process evaluates its own shard, and shards may have
    different numbers of batches, which a DDP forward (a collective) would deadlock on.
    """
    from timm.utils import accuracy
    from tqdm.auto import tqdm
    model.eval()
    loss_sum = correct1 = correct5 = n = 0.0
    ce = nn.CrossEntropyLoss(reduction="sum")
    for images, targets in tqdm(batches, desc="eval", leave=False,
                                disable=not (progress and env.is_main), dynamic_ncols=True):
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with _autocast(device, amp):
            logits = model(images)
        logits = logits.float()
        k5 = min(5, logits.shape[-1])
        top1, top5 = accuracy(logits, targets, topk=(1, k5))
        b = len(targets)
        loss_sum += ce(logits, targets).item()
        correct1 += round(top1.item() * b / 100.0)
        correct5 += round(top5.item() * b / 100.0)
        n += b
    loss_sum, correct1, correct5, n = all_reduce_sum([loss_sum, correct1, correct5, n], env)
    if n == 0:
        raise ValueError("the validation set is empty")
    return {"val_loss": loss_sum / n, "top1": 100.0 * correct1 / n, "top5": 100.0 * correct5 / n,
            "n": int(n)}
