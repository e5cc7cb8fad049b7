"""The ESFormer training recipe: presets against the paper's Table 2, a step that learns, exact
resume after a crash, checkpoint errors, data layouts, drop path, the CLI and two-process DDP.

Everything runs on a tiny image folder written here (3 classes of 32x32 PNGs) and a tiny
ESFormer (the s0 skeleton at its narrowest), so the whole file takes well under a minute.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zcproxy.esformer import Architecture, BlockGenes, SearchSpace, build_model, efficientformer_v2
from zcproxy.train import (
    CheckpointError, RunOptions, TrainRecipe, get_preset, read_log, resolve_arch, train,
)
from zcproxy.train import loop as train_loop
from zcproxy.train.arch import add_drop_path, build_training_model, drop_path_rates
from zcproxy.train.checkpoint import load as load_checkpoint
from zcproxy.train.history import append_row
from zcproxy.train.data import ArrayImageDataset, build_transforms, open_datasets, stratified_split
from zcproxy.train.loop import StepParts, make_loss, make_optimizer, train_step

REPO = Path(__file__).resolve().parents[1]
COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220)]

# The paper's Table 2 ("Training hyper-parameters for ImageNet-1k"), typed in from the paper,
# plus section 4.1 (binary cross-entropy, 224x224).  Not derived from zcproxy.train.presets.
TABLE2 = {
    "s0": dict(optimizer="adamw", batch_size=1024, lr=0.002, sched="cosine", epochs=300,
               warmup_epochs=20, weight_decay=0.02, clip_grad=2.0, mixup=0.8, cutmix=1.0,
               randaugment="rand-m7-n1", random_erasing=0.0, drop_path=0.05,
               label_smoothing=0.1, loss="bce", img_size=224),
    "s2": dict(optimizer="adamw", batch_size=1024, lr=0.002, sched="cosine", epochs=300,
               warmup_epochs=20, weight_decay=0.02, clip_grad=0.01, mixup=0.8, cutmix=1.0,
               randaugment="rand-m9-n1", random_erasing=0.25, drop_path=0.1,
               label_smoothing=0.1, loss="bce", img_size=224),
}
TABLE2["s1"] = dict(TABLE2["s0"])


def tiny_arch() -> Architecture:
    """The s0 skeleton (2-2-6-4 blocks, 4 attention blocks) at its smallest widths."""
    space = SearchSpace("s0")
    stages = []
    for s, depth in enumerate(space.depths):
        blocks = []
        for b in range(depth):
            att = space.is_attention(s, b)
            blocks.append(BlockGenes("ibn", 3, space.choices(s, b, "out_channels")[0], 2,
                                     2 if att else None, 16 if att else None))
        stages.append(tuple(blocks))
    return Architecture("s0", tuple(stages))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """train/ 6 and val/ 3 noisy solid-colour 32x32 PNGs per class, and the tiny arch JSON."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c, color in enumerate(COLORS):
            d = root / split / f"c{c}"
            d.mkdir(parents=True)
            for i in range(n):
                pixels = np.clip(np.array(color) + rng.normal(0, 40, (32, 32, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(d / f"{i}.png")
    (root / "tiny.json").write_text(tiny_arch().to_json())
    return root


def small_recipe(**changes) -> TrainRecipe:
    # preset s0 with mixup, RandAugment and drop path left on so that resume must restore RNGs
    base = dict(img_size=32, batch_size=6, epochs=2, warmup_epochs=1, lr=2e-3, lr_base_batch=6,
                crop_scale=(0.5, 1.0))
    return get_preset("s0").override(**{**base, **changes})


def options(folder: Path, out: Path, **changes) -> RunOptions:
    base = dict(arch=str(folder / "tiny.json"), data=str(folder), output=str(out), device="cpu",
                workers=0, progress=False, threads=1)
    return RunOptions(**{**base, **changes})


@pytest.fixture(scope="module")
def uninterrupted(folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run_a")
    result = train(small_recipe(), options(folder, out))
    assert result.epochs_done == 2
    return out


# ---- presets ------------------------------------------------------------------------------------
def test_presets_match_table2_value_by_value():
    for name, table in TABLE2.items():
        preset = get_preset(name)
        for key, value in table.items():
            assert getattr(preset, key) == value, (name, key)
        assert preset.lr_base_batch == 1024
    # the learning rate is 2e-3 at batch 1024, scaled linearly
    assert get_preset("s0").scaled_lr(256) == pytest.approx(5e-4)
    assert get_preset("s0").scaled_lr() == pytest.approx(2e-3)
    with pytest.raises(ValueError, match="unknown preset 's3'"):
        get_preset("s3")


def test_every_recipe_field_is_a_cli_flag_and_bad_values_are_named():
    from zcproxy.train.__main__ import build_parser
    dests = {a.dest for a in build_parser()._actions}
    missing = [f.name for f in fields(TrainRecipe) if f.name not in dests]
    assert missing == []
    with pytest.raises(ValueError, match=r"img_size=48 must be a multiple of 32"):
        get_preset("s0").override(img_size=48)
    with pytest.raises(ValueError, match=r"warmup_epochs=5 must be < epochs=5"):
        get_preset("s0").override(epochs=5, warmup_epochs=5)
    with pytest.raises(ValueError, match=r"clip_mode='l1' not in"):
        get_preset("s0").override(clip_mode="l1")
    with pytest.raises(ValueError, match=r"unknown recipe field\(s\) \['lr_rate'\]"):
        get_preset("s0").override(lr_rate=1.0)


# ---- one step -----------------------------------------------------------------------------------
def test_one_step_changes_weights_and_lowers_loss_on_a_fixed_batch(folder):
    torch.manual_seed(0)
    recipe = small_recipe(mixup=0.0, cutmix=0.0, drop_path=0.0)
    data = open_datasets(folder)
    _, val_tf = build_transforms(32, "", 0.0, data.mean, data.std, crop_pct=1.0)
    data.set_transforms(val_tf, val_tf)
    images = torch.stack([data.train[i][0] for i in range(len(data.train))])
    targets = torch.tensor([data.train[i][1] for i in range(len(data.train))])
    model = build_training_model(tiny_arch(), 3, 32, 0.0)
    loss_fn = make_loss(recipe)
    parts = StepParts(model, make_optimizer(model, recipe, lr=1e-3), loss_fn, None, None,
                      recipe.clip_grad, recipe.clip_mode, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss0 = train_step(parts, images, targets).item()
    with torch.no_grad():
        model.train()
        loss1 = loss_fn(model(images), targets).item()
    changed = [k for k, v in model.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])]
    assert "head.weight" in changed and "stem.0.conv.weight" in changed
    assert loss1 < loss0


# ---- resume -------------------------------------------------------------------------------------
def _assert_same_run(a: Path, b: Path):
    sa, sb = load_checkpoint(a / "last.pth"), load_checkpoint(b / "last.pth")
    assert sa["epoch"] == sb["epoch"] == 2 and sa["global_step"] == sb["global_step"]
    for key, value in sa["model"].items():
        assert torch.equal(value, sb["model"][key]), key
    opt_a, opt_b = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert opt_a.keys() == opt_b.keys()
    for i in opt_a:
        for name, value in opt_a[i].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(opt_b[i][name]))
    la, lb = read_log(a / "log.csv"), read_log(b / "log.csv")
    assert [r["epoch"] for r in la] == [r["epoch"] for r in lb] == [1, 2]
    for ra, rb in zip(la, lb):
        for col in ("lr", "train_loss", "val_loss", "top1", "top5"):
            assert ra[col] == rb[col], col


def test_run_stopped_after_one_epoch_resumes_to_identical_weights(folder, uninterrupted, tmp_path):
    first = train(small_recipe(), options(folder, tmp_path, stop_after_epochs=1))
    assert first.epochs_done == 1 and len(read_log(tmp_path / "log.csv")) == 1
    # as if killed after logging epoch 2 but before its checkpoint: the stale row must go
    append_row(tmp_path / "log.csv", dict(epoch=2, lr=1, train_loss=1, val_loss=1, top1=99,
                                          top5=99, images_per_s=1, seconds=1))
    train(small_recipe(), options(folder, tmp_path, resume="auto"))
    _assert_same_run(uninterrupted, tmp_path)


def test_crash_in_the_middle_of_an_epoch_resumes_to_identical_weights(folder, uninterrupted,
                                                                     tmp_path, monkeypatch):
    calls = {"n": 0}
    real_step = train_loop.train_step

    def crashing_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 1 has 3 steps: this is the middle of epoch 2
            raise KeyboardInterrupt("simulated kill")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_loop, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train(small_recipe(), options(folder, tmp_path))
    monkeypatch.setattr(train_loop, "train_step", real_step)
    assert load_checkpoint(tmp_path / "last.pth")["epoch"] == 1
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind
    train(small_recipe(), options(folder, tmp_path, resume="auto"))
    _assert_same_run(uninterrupted, tmp_path)


def test_eval_only_reproduces_the_logged_best_top1(folder, uninterrupted):
    best = max(r["top1"] for r in read_log(uninterrupted / "log.csv"))
    result = train(small_recipe(), options(folder, uninterrupted, eval_only=True,
                                           resume=str(uninterrupted / "best.pth")))
    assert result.last["top1"] == pytest.approx(best) and result.last["n"] == 9


# ---- checkpoint errors --------------------------------------------------------------------------
def test_corrupt_checkpoint_names_the_file(folder, uninterrupted, tmp_path):
    good = (uninterrupted / "last.pth").read_bytes()
    cases = {"truncated.pth": good[: len(good) // 2], "garbage.pth": os.urandom(4096)}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    torch.save({"model": {}}, tmp_path / "foreign.pth")
    expected = {"truncated.pth": "corrupt", "garbage.pth": "corrupt",
                "tensor.pth": "holds a Tensor", "foreign.pth": "not a zcproxy training checkpoint"}
    for name, message in expected.items():
        path = tmp_path / name
        with pytest.raises(CheckpointError, match=re.escape(str(path)) + ".*" + message):
            train(small_recipe(), options(folder, tmp_path / "out", resume=str(path)))
    with pytest.raises(CheckpointError, match="does not exist"):
        train(small_recipe(), options(folder, tmp_path / "out", resume=str(tmp_path / "nope.pth")))


def test_checkpoint_of_another_arch_or_preset_is_refused(folder, uninterrupted, tmp_path):
    path = uninterrupted / "last.pth"
    wider = tiny_arch().replace_block(3, 3, out_channels=152)
    (tmp_path / "wider.json").write_text(wider.to_json())
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + r"(.|\n)*"
                       + re.escape("stage 4 block 4 out_channels: 144 vs 152")):
        train(small_recipe(), options(folder, tmp_path, arch=str(tmp_path / "wider.json"),
                                      resume=str(path)))
    s2 = get_preset("s2").override(img_size=32, batch_size=6, epochs=2, warmup_epochs=1)
    with pytest.raises(CheckpointError) as err:
        train(s2, options(folder, tmp_path, preset="s2", resume=str(path)))
    text = str(err.value)
    assert str(path) in text and "preset: checkpoint 's0', this run 's2'" in text
    assert "recipe clip_grad: checkpoint 2.0, this run 0.01" in text


# ---- data ---------------------------------------------------------------------------------------
def _write_cifar(folder: Path, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    folder.mkdir(parents=True)
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": data, b"labels": labels.tolist()}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return data, labels


def test_cifar_test_batch_split_is_stratified_deterministic_and_exact(tmp_path):
    data, labels = _write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py", per_class=8)
    with pytest.raises(ValueError, match="only test_batch.*--cifar-split-val"):
        open_datasets(tmp_path)
    d = open_datasets(tmp_path, 0.25)
    assert d.num_classes == 10 and len(d.train) == 60 and len(d.val) == 20
    assert np.bincount(d.val.labels).tolist() == [2] * 10
    again = open_datasets(tmp_path / "cifar10", 0.25)  # another spelling of the same folder
    assert np.array_equal(again.val.images, d.val.images)
    # every image is served unchanged (channel-major rows -> HWC pixels), in exactly one split
    rows = {data[i].tobytes(): labels[i] for i in range(len(labels))}
    seen = []
    for ds in (d.train, d.val):
        for i in range(len(ds)):
            image, label = ds[i]
            row = np.asarray(image).transpose(2, 0, 1).reshape(-1).tobytes()
            assert rows[row] == label
            seen.append(row)
    assert sorted(seen) == sorted(rows)
    train_idx, val_idx = stratified_split(labels, 0.25)
    assert not set(train_idx) & set(val_idx)


def test_bad_data_folders_are_named(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path)) + ".*neither an image folder"):
        open_datasets(tmp_path)
    with pytest.raises(ValueError, match="image folder with its own val/"):
        open_datasets(folder, 0.1)
    with pytest.raises(ValueError, match="uint8"):
        ArrayImageDataset(np.zeros((2, 4, 4, 3)), np.zeros(2))


# ---- architectures and drop path ----------------------------------------------------------------
def test_resolve_arch_names_files_and_errors(tmp_path):
    assert resolve_arch("efficientformerv2_s1")[0] == efficientformer_v2("s1")
    assert resolve_arch("EfficientFormer_V2_S2")[0] == efficientformer_v2("s2")
    arch = tiny_arch()
    (tmp_path / "best.json").write_text(json.dumps({"arch": arch.to_dict(), "score": 1.5}))
    assert resolve_arch(str(tmp_path / "best.json"))[0] == arch
    with pytest.raises(FileNotFoundError, match="neither a baseline name.*nope.json"):
        resolve_arch(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a readable JSON"):
        resolve_arch(str(tmp_path / "bad.json"))


def test_drop_path_is_stochastic_in_training_only_and_keeps_the_state_dict():
    arch = tiny_arch()
    torch.manual_seed(0)
    model = build_training_model(arch, 3, 32, 0.5)
    torch.manual_seed(0)
    plain = build_model(arch, 3, 32, layer_scale_init=1.0)
    assert model.state_dict().keys() == plain.state_dict().keys()
    # layer scale 1 makes every branch count, so dropping one changes the output
    for module in model.modules():
        if hasattr(module, "gamma"):
            torch.nn.init.ones_(module.gamma)
    x = torch.randn(4, 3, 32, 32)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    rates = drop_path_rates(14, 0.05)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.05)
    assert np.allclose(np.diff(rates), 0.05 / 13)
    # every block but the first (rate 0) gets a hook; attention blocks get two (MHSA and FFN)
    handles = add_drop_path(build_model(arch, 3, 32), 0.1)
    assert len(handles) == 13 + 4


# ---- command line -------------------------------------------------------------------------------
def test_help_exits_zero():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "zcproxy.train", "--help"], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ("--arch", "--data", "--preset", "--resume", "--eval-only", "torchrun"):
        assert flag in out.stdout


def test_cli_reports_a_mismatch_as_an_error_exit(folder, uninterrupted, capsys):
    from zcproxy.train.__main__ import main
    with pytest.raises(SystemExit) as exit_info:
        main(["--arch", str(folder / "tiny.json"), "--data", str(folder), "--device", "cpu",
              "--workers", "0", "--no-progress", "--img-size", "32", "--batch-size", "6",
              "--resume", str(uninterrupted / "last.pth"), "--output", str(uninterrupted)])
    assert exit_info.value.code == 2
    assert "belongs to another experiment" in capsys.readouterr().err


# ---- distributed --------------------------------------------------------------------------------
def test_two_process_gloo_training_keeps_replicas_identical(folder, tmp_path):
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(folder), str(tmp_path)), nprocs=2,
             join=True)
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    for key in w0:  # parameters via DDP's gradient averaging, BN statistics via the broadcast
        assert torch.equal(w0[key], w1[key]), key
    state = load_checkpoint(tmp_path / "last.pth")
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["global_step"] == 4
    assert len(read_log(tmp_path / "log.csv")) == 1


def _ddp_worker(rank: int, world: int, port: int, folder: str, out: str) -> None:
    """One torchrun-like process: the environment torchrun would set, then the library call."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    result = train(small_recipe(batch_size=4, epochs=1, warmup_epochs=0),
                   options(Path(folder), Path(out)))
    torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")
