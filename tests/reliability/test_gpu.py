"""The CUDA path: mixed precision, channels_last, eval / predict / export, loader settings.

Every test here is marked `gpu`: skipped where torch sees no CUDA GPU (tests/conftest.py),
run on one by `python scripts/gpu_check.py` (docs/gpu.md). Jobs are tiny (UNet widths
[4, 8, 16], 64 px, the synthetic dataset of tests/conftest.py), so the file takes seconds
of GPU time; most of it is Lightning starting and stopping.
"""

import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segpets.builders import build_datamodule, build_module, build_trainer
from segpets.callbacks import NonFiniteLossError
from segpets.data.loading import GPU_PREFETCH, MAX_WORKERS, available_cpus
from segpets.eval import evaluate
from segpets.export import export
from segpets.losses import BCELoss
from segpets.precision import auto_precision
from segpets.predict import predict
from segpets.train import train
from tests.helpers import TINY_UNET, compose_train, tiny_run_overrides

pytestmark = pytest.mark.gpu

GPU = ["trainer.accelerator=gpu", "trainer.devices=1"]
# Lightning's GradScaler starts at 2**16 and halves the scale at every step it skips; it
# only grows it again after 2000 steps without an overflow (more than a test trains).
INITIAL_SCALE = 2.0**16
OVERFLOW_STEPS = 3
# Parity runs compare computations, not TF32 rounding: in float32 with TF32 off, CUDA and
# the CPU agree to about 1e-6, and only pixels within that of the threshold can flip.
EXACT = ["trainer.precision=32-true", "matmul_precision=highest"]


class OverflowingBCE(nn.Module):
    """BCE times `factor` for the first `steps` training calls, then plain BCE.

    The loss itself stays finite in float32 (about 0.7 x 1e6); what overflows is its
    gradient once it flows back into float16: at the scaler's initial scale 2**16 the
    gradient of each of the N = 4 x 64 x 64 logits is about factor x 2**16 x 0.5 / N
    = 2e6, past float16's largest value 65504. The scaler must skip those steps and
    lower its scale, and the NaN guard, which looks at the loss, must not fire.
    """

    def __init__(self, steps: int = OVERFLOW_STEPS, factor: float = 1e6) -> None:
        super().__init__()
        self.steps = steps
        self.factor = factor
        self.calls = 0
        self.bce = BCELoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.bce(logits, target)
        if self.training:
            self.calls += 1
            if self.calls <= self.steps:
                return loss * self.factor
        return loss


@pytest.fixture
def exact_float32():
    """cuDNN convolutions and matmuls in true float32 (no TF32) for the test, then as before."""
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.set_float32_matmul_precision(matmul)


def gpu_train_config(tmp_path: Path, synthetic_root: Path, *overrides: str):
    return compose_train(
        tmp_path, [*tiny_run_overrides(synthetic_root), *TINY_UNET, *GPU, *overrides]
    )


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def all_finite(state_dict: dict) -> bool:
    return all(
        torch.isfinite(value).all() for value in state_dict.values() if value.is_floating_point()
    )


# ------------------------------------------------------------------------ precision


def test_fp16_overflow_is_skipped_by_the_scaler_not_stopped_by_the_guard(synthetic_root, tmp_path):
    cfg = gpu_train_config(
        tmp_path,
        synthetic_root,
        "trainer.precision=16-mixed",
        "trainer.max_epochs=2",
        f"loss._target_={__name__}.OverflowingBCE",
        "~loss.terms",
        "~loss.weights",
    )
    assert cfg.callbacks.nan_guard is not None  # the guard is on, and stays quiet
    metrics = train(cfg)  # a NonFiniteLossError here would mean the guard fired

    assert metrics["precision"] == "16-mixed"
    assert metrics["epochs_trained"] == 2
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all_finite(last["state_dict"])
    # Adam counts the updates it applied; the Trainer counts every optimizer step it ran.
    applied = {int(state["step"]) for state in last["optimizer_states"][0]["state"].values()}
    assert len(applied) == 1, applied
    skipped = last["global_step"] - applied.pop()
    assert skipped >= OVERFLOW_STEPS, (last["global_step"], skipped)
    assert last["global_step"] > skipped  # training went on after the overflows
    scale = last["MixedPrecision"]["scale"]
    assert scale == INITIAL_SCALE / 2**skipped, (scale, skipped)
    assert math.isfinite(metrics["val"]["val/loss"])
    assert 0.0 <= metrics["val"]["val/dice"] <= 1.0


def test_a_nan_loss_under_fp16_stops_the_run_naming_the_step(synthetic_root, tmp_path):
    cfg = gpu_train_config(
        tmp_path,
        synthetic_root,
        "trainer.precision=16-mixed",
        "trainer.max_epochs=5",
        "loss._target_=tests.helpers.NaNAfterSteps",
        "+loss.steps=9",
        "~loss.terms",
        "~loss.weights",
    )
    # 27 training images, batch 4: 6 steps an epoch, so the 10th step is in epoch 1.
    with pytest.raises(NonFiniteLossError, match=r"NaN or infinite at step \d+ \(epoch 1\)"):
        train(cfg)
    for name in ("best.ckpt", "last.ckpt"):
        checkpoint = load_checkpoint(tmp_path / "run" / "checkpoints" / name)
        assert checkpoint["epoch"] == 0
        assert all_finite(checkpoint["state_dict"])


def test_bf16_mixed_trains(synthetic_root, tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} computes no bfloat16")
    cfg = gpu_train_config(
        tmp_path, synthetic_root, "trainer.precision=bf16-mixed", "trainer.max_epochs=2"
    )
    metrics = train(cfg)
    assert metrics["precision"] == "bf16-mixed"
    assert metrics["epochs_trained"] == 2
    assert math.isfinite(metrics["val"]["val/loss"])
    assert 0.0 <= metrics["test"]["test/dice"] <= 1.0
    assert all_finite(load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["state_dict"])


def test_auto_precision_is_bf16_where_the_gpu_has_it_else_fp16(synthetic_root, tmp_path):
    expected = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    assert auto_precision("gpu") == auto_precision("auto") == expected
    cfg = gpu_train_config(tmp_path, synthetic_root, "trainer.precision=auto", "debug=fdr")
    metrics = train(cfg)
    assert metrics["precision"] == expected


@pytest.mark.parametrize("precision", ["32-true", "16-mixed", "bf16-mixed"])
def test_channels_last_logits_equal_the_contiguous_ones(precision, tmp_path, exact_float32):
    if precision == "bf16-mixed" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name()} computes no bfloat16")
    modules = {}
    for layout in (False, True):
        cfg = compose_train(tmp_path, [*TINY_UNET, f"module.channels_last={layout}"])
        torch.manual_seed(0)
        modules[layout] = build_module(cfg).cuda().eval()
    modules[True].load_state_dict(modules[False].state_dict())
    assert next(modules[True].model.parameters()).is_contiguous(memory_format=torch.channels_last)

    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)).cuda()
    dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(precision)
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        contiguous = modules[False](images).float()
        channels_last = modules[True](images).float()
    assert contiguous.shape == channels_last.shape == (4, 1, 64, 64)
    assert torch.isfinite(contiguous).all() and torch.isfinite(channels_last).all()
    # Both layouts may pick different cuDNN algorithms: equal up to their rounding.
    tolerance = {"32-true": 1e-4, "16-mixed": 1e-2, "bf16-mixed": 5e-2}[precision]
    scale = max(1.0, float(contiguous.abs().max()))
    difference = float((contiguous - channels_last).abs().max())
    assert difference <= tolerance * scale, (precision, difference, scale)


# ------------------------------------------------------------ eval / predict / export


def test_eval_on_cuda_scores_what_it_scores_on_the_cpu(tiny_run, tmp_path, exact_float32):
    reports = {}
    for device in ("cpu", "cuda"):
        overrides = [
            f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}",
            f"device={device}",
            *EXACT,
        ]
        cfg = compose_train(tmp_path / device, overrides, config_name="eval")
        reports[device] = evaluate(cfg, overrides)
    assert reports["cuda"]["images"] == reports["cpu"]["images"] == 10
    for key in ("dice", "iou", "dice_dataset"):
        assert reports["cuda"][key] == pytest.approx(reports["cpu"][key], abs=1e-3), key


def test_predict_on_cuda_writes_the_cpu_masks(tiny_run, synthetic_root, tmp_path, exact_float32):
    summaries = {}
    for device in ("cpu", "cuda"):
        overrides = [
            f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}",
            f"input={synthetic_root / 'images'}",
            f"output_dir={tmp_path / device}",
            f"device={device}",
            *EXACT,
        ]
        cfg = compose_train(tmp_path / f"{device}-hydra", overrides, config_name="predict")
        summaries[device] = predict(cfg, overrides)
    assert summaries["cuda"]["predicted"] == summaries["cpu"]["predicted"] == 40
    assert summaries["cuda"]["mean_dice"] == pytest.approx(summaries["cpu"]["mean_dice"], abs=1e-3)

    masks = sorted((tmp_path / "cpu" / "masks").glob("*.png"))
    assert len(masks) == 40
    pixels = differing = 0
    for cpu_mask in masks:
        cpu = np.asarray(Image.open(cpu_mask))
        cuda = np.asarray(Image.open(tmp_path / "cuda" / "masks" / cpu_mask.name))
        assert cpu.shape == cuda.shape
        pixels += cpu.size
        differing += int((cpu != cuda).sum())
    # All but a few pixels, those whose probability sits on the threshold.
    assert differing <= max(10, pixels // 1000), (differing, pixels)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_works_on_a_cuda_machine(fmt, tiny_run, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnx")
    output = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    overrides = [
        f"ckpt_path={tiny_run / 'checkpoints' / 'best.ckpt'}",
        f"format={fmt}",
        f"output={output}",
    ]
    cfg = compose_train(tmp_path, overrides, config_name="export")
    # The file is traced on the CPU whatever device the checkpoint was trained on.
    assert export(cfg, overrides) == output
    assert output.is_file() and output.stat().st_size > 0
    assert output.with_name(output.name + ".json").is_file()


# --------------------------------------------------------------------------- loading


def test_auto_workers_on_a_gpu_pin_memory_and_prefetch_deeper(synthetic_root, tmp_path):
    cpus = available_cpus()
    if cpus <= 2:
        pytest.skip(f"{cpus} CPUs: auto leaves no core for loader workers beside the GPU's")
    cfg = gpu_train_config(
        tmp_path,
        synthetic_root,
        "data.num_workers=auto",
        "data.prefetch_factor=auto",
        "data.pin_memory=null",
    )
    trainer = build_trainer(cfg, logger=False, callbacks=[])
    assert isinstance(trainer, L.Trainer) and trainer.strategy.root_device.type == "cuda"
    datamodule = build_datamodule(cfg)
    datamodule.trainer = trainer
    datamodule.prepare_data()
    loader = datamodule.train_dataloader()
    assert loader.num_workers == min(MAX_WORKERS, cpus - 1) > 0
    assert loader.pin_memory
    assert loader.prefetch_factor == GPU_PREFETCH == 4
    assert loader.persistent_workers
    batch = next(iter(loader))
    assert batch["image"].is_pinned() and batch["mask"].is_pinned()
