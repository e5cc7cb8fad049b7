"""The ESFormer paper's ImageNet training recipe (section 4.1, Table 2) as named presets.

A :class:`TrainRecipe` holds every hyper-parameter that changes what a run learns; the command
line can override each field, and a checkpoint records the recipe so that resuming with a
different one is refused (see :mod:`zcproxy.train.checkpoint`).

Values the paper gives (Table 2) and values it leaves open, which we take from the
EfficientFormerV2 reference training script that the paper says it used for its baselines:

==================  ================  ================  ======================================
field               S0, S1            S2                source
==================  ================  ================  ======================================
optimizer           adamw             adamw             Table 2
batch_size          1024              1024              Table 2 (global, all processes)
lr                  2e-3              2e-3              Table 2, at ``lr_base_batch`` = 1024
sched               cosine            cosine            Table 2
epochs              300               300               Table 2
warmup_epochs       20                20                Table 2
weight_decay        0.02              0.02              Table 2
clip_grad           2.0               0.01              Table 2
mixup / cutmix      0.8 / 1.0         0.8 / 1.0         Table 2
randaugment         rand-m7-n1        rand-m9-n1        Table 2 (timm RandAugment string)
random_erasing      0.0               0.25              Table 2
drop_path           0.05              0.1               Table 2 (stochastic depth)
label_smoothing     0.1               0.1               Table 2
loss                bce               bce               section 4.1 (binary cross-entropy)
img_size            224               224               section 4.1
crop_scale          0.08-1.0          0.08-1.0          timm / EfficientFormerV2 default
interpolation       bicubic           bicubic           EfficientFormerV2 script (not in paper)
clip_mode           agc               agc               EfficientFormerV2 script (not in paper)
warmup_lr, min_lr   1e-6, 1e-5        1e-6, 1e-5        EfficientFormerV2 script (not in paper)
==================  ================  ================  ======================================

Why ``clip_mode="agc"``: 0.01 (S2) is exactly the EfficientFormerV2 script's default
``--clip-grad 0.01 --clip-mode agc`` (adaptive gradient clipping, a factor on the
parameter/gradient norm ratio); read as a global gradient-norm bound, 0.01 would be far below
typical gradient norms.  The paper does not name the mode, so this is our reading; pass
``--clip-mode norm`` for plain global-norm clipping.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

PRESET_NAMES: tuple[str, ...] = ("s0", "s1", "s2")
LOSSES: tuple[str, ...] = ("bce", "ce")
CLIP_MODES: tuple[str, ...] = ("norm", "value", "agc")


@dataclass(frozen=True)
class TrainRecipe:
    """Every hyper-parameter that shapes what a run learns (see the module table for sources).

    ``lr`` is the learning rate at ``lr_base_batch`` images per step; the rate actually used is
    scaled linearly with the global batch size (:meth:`scaled_lr`), so the same recipe can run
    on one GPU or many.  ``clip_grad <= 0`` disables clipping; ``mixup = cutmix = 0`` disables
    mixing; ``randaugment = ""`` disables RandAugment.
    """

    optimizer: str = "adamw"
    batch_size: int = 1024
    lr: float = 2e-3
    lr_base_batch: int = 1024
    sched: str = "cosine"
    epochs: int = 300
    warmup_epochs: int = 20
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    weight_decay: float = 0.02
    clip_grad: float = 2.0
    clip_mode: str = "agc"
    mixup: float = 0.8
    cutmix: float = 1.0
    randaugment: str = "rand-m7-n1"
    random_erasing: float = 0.0
    drop_path: float = 0.05
    label_smoothing: float = 0.1
    loss: str = "bce"
    img_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        problems = []
        try:
            scale = tuple(float(v) for v in self.crop_scale)
        except (TypeError, ValueError):
            scale = ()
        if len(scale) != 2 or not 0.0 < scale[0] <= scale[1] <= 1.0:
            problems.append(f"crop_scale={self.crop_scale!r} must be two numbers 0 < min <= max <= 1")
        else:
            object.__setattr__(self, "crop_scale", scale)
        if self.interpolation not in ("bicubic", "bilinear", "nearest", "random"):
            problems.append(f"interpolation={self.interpolation!r} not in "
                            "('bicubic', 'bilinear', 'nearest', 'random')")
        for name in ("batch_size", "lr_base_batch", "epochs", "img_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                problems.append(f"{name}={value!r} must be a positive integer")
        if isinstance(self.img_size, int) and self.img_size > 0 and self.img_size % 32:
            problems.append(f"img_size={self.img_size} must be a multiple of 32 (ESFormer strides)")
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            problems.append(f"warmup_epochs={self.warmup_epochs!r} must be an integer >= 0")
        elif isinstance(self.epochs, int) and self.warmup_epochs >= self.epochs > 0:
            problems.append(f"warmup_epochs={self.warmup_epochs} must be < epochs={self.epochs}")
        for name in ("lr", "warmup_lr", "min_lr", "weight_decay", "mixup", "cutmix"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)!r} must be >= 0")
        if self.lr <= 0:
            problems.append(f"lr={self.lr!r} must be > 0")
        for name in ("random_erasing", "drop_path", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name}={getattr(self, name)!r} must be in [0, 1)")
        if self.loss not in LOSSES:
            problems.append(f"loss={self.loss!r} not in {LOSSES}")
        if self.clip_mode not in CLIP_MODES:
            problems.append(f"clip_mode={self.clip_mode!r} not in {CLIP_MODES}")
        if self.randaugment and not self.randaugment.startswith("rand-"):
            problems.append(f"randaugment={self.randaugment!r} must be a timm RandAugment string "
                            "such as 'rand-m7-n1' (or '' for none)")
        if problems:
            raise ValueError("invalid training recipe:\n  " + "\n  ".join(problems))

    @property
    def mixing(self) -> bool:
        """Whether Mixup/CutMix is on (it then also carries the label smoothing)."""
        return self.mixup > 0 or self.cutmix > 0

    def scaled_lr(self, batch_size: int | None = None) -> float:
        """The learning rate for a global batch of ``batch_size`` (default: the recipe's)."""
        return self.lr * (batch_size or self.batch_size) / self.lr_base_batch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def override(self, **changes: Any) -> "TrainRecipe":
        """A copy with some fields changed; ``None`` values mean "keep the preset's"."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown recipe field(s) {unknown}; fields are {sorted(known)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_S2_CHANGES = dict(clip_grad=0.01, randaugment="rand-m9-n1", random_erasing=0.25, drop_path=0.1)

PRESETS: dict[str, TrainRecipe] = {
    "s0": TrainRecipe(),
    "s1": TrainRecipe(),
    "s2": TrainRecipe(**_S2_CHANGES),
}


def get_preset(name: str) -> TrainRecipe:
    """The Table 2 recipe for target size ``name`` ("s0", "s1" or "s2")."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {PRESET_NAMES}") from None
