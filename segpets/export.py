"""`python -m segpets.export`: the trained network as one ONNX or TorchScript file, or a folder.

    python -m segpets.export ckpt_path=RUN/checkpoints/best.ckpt format=onnx output=pets.onnx
    python -m segpets.export ckpt_path=RUN/checkpoints/best.ckpt format=folder output=DIR

`format=folder` writes a model folder (safetensors weights, run config, normalization.json
and a README.md model card; segpets/model_folder.py) that `segpets.load(DIR)` reads.

The file runs without segpets, Hydra or Albumentations. Its contract, also written to
`<output>.json` beside it with the checkpoint's values:

    input   "images": float32 RGB in [0, 1], NCHW; any batch, height and width
    output  "logits": float32 (B, 1, H, W), the same height and width;
            probability = sigmoid(logits), pet where probability >= threshold

The checkpoint's mean/std normalisation happens inside the graph. The network was trained
on `image_size` squares, so resize photos to that size first, as `segpets.predict` does;
other sizes run too (sides are padded to a multiple of the output stride and cropped back).

Both formats come from the TorchScript tracer: `SegmentationModel.forward` takes its pads
from `x.shape`, so the trace keeps height and width symbolic. Every export is checked
against the PyTorch model at a size it was not traced at, and the difference is recorded.
torch.onnx's dynamo exporter would need onnxscript, which segpets does not require.
"""

import hashlib
import io
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from torch import nn

import segpets
from segpets.checkpointing import write_atomically
from segpets.cli import CONFIG_PATH, exit_on_user_error, require_options, run
from segpets.errors import ConfigError, SegpetsError
from segpets.model_folder import io_contract, provenance_of, save_folder
from segpets.trained import TrainedModel, load_for_inference

USAGE = "python -m segpets.export ckpt_path=RUN/checkpoints/best.ckpt format=onnx output=FILE"
INPUT_NAME, OUTPUT_NAME = "images", "logits"
FOLDER = "folder"
DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
# Pad with sizes computed in the graph needs 11; torch's TorchScript-based exporter stops at 20.
OPSETS = range(11, 21)
# The check input: batch 3, sides that are neither the traced ones nor multiples of 32.
CHECK_SHAPE = (3, 3, 71, 45)
CHECK_TOLERANCE = 1e-3  # max abs logit difference, fp32; seen: about 1e-6


class NormalizedInputModel(nn.Module):
    """Takes RGB in [0, 1] and normalises it, so callers need nothing from the training config."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std)


def _quietly(export: Callable[[], Any]) -> Any:
    """Run a torch.jit / TorchScript-ONNX call without its deprecation notices (see above)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*deprecated.*", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="The feature will be removed.*")
        return export()


def to_onnx(module: nn.Module, example: torch.Tensor, opset: int) -> bytes:
    buffer = io.BytesIO()
    _quietly(
        lambda: torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: DYNAMIC_AXES, OUTPUT_NAME: DYNAMIC_AXES},
            opset_version=opset,
        )
    )
    return buffer.getvalue()


def to_torchscript(module: nn.Module, example: torch.Tensor) -> bytes:
    traced = _quietly(lambda: torch.jit.trace(module, example, check_trace=False))
    buffer = io.BytesIO()
    _quietly(lambda: torch.jit.save(traced, buffer))
    return buffer.getvalue()


def run_onnx(data: bytes, images: torch.Tensor) -> torch.Tensor | None:
    """Logits from ONNX Runtime, or None when it is not installed (`segpets[export]`)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})[0])


def run_torchscript(data: bytes, images: torch.Tensor) -> torch.Tensor:
    module = _quietly(lambda: torch.jit.load(io.BytesIO(data), map_location="cpu"))
    with torch.no_grad():
        return module(images)


FORMATS: dict[str, tuple[Callable[..., bytes], Callable[[bytes, torch.Tensor], Any]]] = {
    "onnx": (to_onnx, run_onnx),
    "torchscript": (to_torchscript, run_torchscript),
}


def _check_options(cfg: DictConfig) -> None:
    require_options(cfg, ("output",), USAGE)
    if cfg.format not in (*FORMATS, FOLDER):
        raise ConfigError(
            f"format must be one of {', '.join((*FORMATS, FOLDER))}, got {cfg.format!r}"
        )
    output = Path(cfg.output)
    if cfg.format == FOLDER:
        if output.exists() and not output.is_dir():
            raise ConfigError(f"output={output} is a file; format=folder writes a folder")
        return
    if cfg.format == "onnx" and (isinstance(cfg.opset, bool) or cfg.opset not in OPSETS):
        raise ConfigError(
            f"opset must be an integer from {OPSETS.start} to {OPSETS.stop - 1} (dynamic "
            f"height and width need 11; torch's exporter supports up to {OPSETS.stop - 1}), "
            f"got {cfg.opset!r}"
        )
    if output.is_dir():
        raise ConfigError(f"output={output} is a folder; name the file, e.g. {output}/model.onnx")


def export(cfg: DictConfig, overrides: Sequence[str] = ()) -> Path:
    """Export `cfg.ckpt_path` to `cfg.output` in `cfg.format`, with its JSON contract.

    Raises if the exported file, run at a size it was not traced at, differs from the
    PyTorch model by more than CHECK_TOLERANCE. Returns the path of the exported file.
    """
    _check_options(cfg)
    trained = load_for_inference(cfg, overrides, device="cpu")  # traced and checked on the CPU
    if cfg.format == FOLDER:
        return _export_folder(trained, Path(cfg.output))
    model, run_config = trained.model, trained.run_config
    output = Path(cfg.output)
    for checkpoint in filter(None, (trained.ckpt_path, *trained.checkpoints)):
        if output.resolve() == Path(checkpoint).resolve():
            raise SegpetsError(f"output={output} is the checkpoint itself; choose another file")
    data = run_config.data
    module = NormalizedInputModel(model, data.mean, data.std).eval()
    size = int(data.image_size)
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(2, 3, size, size, generator=generator)
    probe = torch.rand(*CHECK_SHAPE, generator=generator)

    to_bytes, run_exported = FORMATS[cfg.format]
    options = {"opset": int(cfg.opset)} if cfg.format == "onnx" else {}
    with torch.no_grad():
        exported = to_bytes(module, example, **options)
        expected = module(probe)
    actual = run_exported(exported, probe)
    check: dict[str, Any] = {"input_shape": list(CHECK_SHAPE), "max_abs_diff": None}
    if actual is None:
        print("onnxruntime is not installed: the ONNX file was not run (pip install onnxruntime)")
    else:
        if actual.shape != expected.shape:
            raise RuntimeError(
                f"exported model returned {tuple(actual.shape)} for {CHECK_SHAPE}, "
                f"expected {tuple(expected.shape)}"
            )
        check["max_abs_diff"] = float((actual - expected).abs().max())
        if not check["max_abs_diff"] <= CHECK_TOLERANCE:
            raise RuntimeError(
                f"exported model differs from the PyTorch one by {check['max_abs_diff']:.3g} "
                f"(> {CHECK_TOLERANCE}) on a {CHECK_SHAPE} input"
            )

    write_atomically(output, exported)
    contract = {
        "format": cfg.format,
        "file": output.name,
        "sha256": hashlib.sha256(exported).hexdigest(),
        **io_contract(
            data,
            trained.threshold,
            getattr(model, "output_stride", None),
            run_config.model,
            normalization_inside=True,
            run_config=run_config,
        ),
        "opset": options.get("opset"),
        "segpets_version": segpets.__version__,
        "torch_version": torch.__version__,
        "checkpoint": str(Path(trained.ckpt_path).resolve())
        if trained.ckpt_path
        else [str(Path(path).resolve()) for path in trained.checkpoints],
        "check": check,
    }
    contract_path = output.with_name(output.name + ".json")
    write_atomically(contract_path, (json.dumps(contract, indent=2) + "\n").encode())
    print(f"exported {cfg.format} to {output} (contract: {contract_path})")
    if check["max_abs_diff"] is not None:
        shape = "x".join(map(str, CHECK_SHAPE))
        print(f"checked at {shape}: max |logit difference| {check['max_abs_diff']:.2g}")
    return output


def _export_folder(trained: TrainedModel, output: Path) -> Path:
    """A model folder of `trained`, its card filled from the checkpoint's run dir."""
    save_folder(trained, output, provenance_of(trained.ckpt_path))
    print(f"exported a model folder to {output} (load it with segpets.load({str(output)!r}))")
    return output


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    export(cfg, HydraConfig.get().overrides.task)


if __name__ == "__main__":
    run(main)
