"""Training ESFormer / EfficientFormerV2 networks with the ESFormer paper's recipe (Table 2).

    python -m zcproxy.train --arch efficientformerv2_s0 --data /imagenet --preset s0
    torchrun --nproc_per_node 8 -m zcproxy.train --arch results/search/s1/best.json --data /imagenet

From Python::

    from zcproxy.train import RunOptions, get_preset, train
    recipe = get_preset("s0").override(epochs=10, warmup_epochs=1, batch_size=128)
    result = train(recipe, RunOptions(arch="efficientformerv2_s0", data="cifar-10-batches-py",
                                      cifar_split_val=0.1, output="runs/s0"))
"""
from .checkpoint import CheckpointError
from .arch import BASELINES, add_drop_path, build_training_model, resolve_arch
from .history import COLUMNS, plot_curve, read_log
from .presets import PRESET_NAMES, PRESETS, TrainRecipe, get_preset
from .run import RunOptions, RunResult, train

__all__ = [
    "TrainRecipe", "PRESETS", "PRESET_NAMES", "get_preset", "RunOptions", "RunResult", "train",
    "CheckpointError", "resolve_arch", "build_training_model", "add_drop_path", "BASELINES",
    "plot_curve", "read_log", "COLUMNS",
]
