"""Model folders: a trained network with everything needed to use it, and no more.

    DIR/model.safetensors    the network's weights (safetensors; no pickled code)
    DIR/config.yaml          the run config: model, data (size, normalisation), module...
    DIR/normalization.json   the input contract, as `segpets.export` writes it for a file
    DIR/README.md            a model card: architecture, data, scores, the training command

`Segmenter.save(DIR)` and `python -m segpets.export ckpt_path=... format=folder output=DIR`
write one; `segpets.load(DIR)` reads it back without any other file and without the
network (a pretrained encoder named in the config is never fetched: the weights replace
it). What the card says about the run (scores from metrics.json, the command from
.hydra/overrides.yaml) also travels in the safetensors header, so a folder saved again
from a loaded one keeps it. An ensemble (`model=ensemble`) is built from its members'
checkpoints and is not saved as a folder.
"""

import contextlib
import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import segpets
from segpets.checkpointing import CONFIG_KEY, load_model, run_dir_of, write_atomically
from segpets.cli import to_container
from segpets.errors import SegpetsError
from segpets.inference import pick_device, postprocess_name
from segpets.trained import TrainedModel, inference_options

WEIGHTS, CONFIG, NORMALIZATION, CARD = (
    "model.safetensors",
    "config.yaml",
    "normalization.json",
    "README.md",
)
FILES = (WEIGHTS, CONFIG, NORMALIZATION, CARD)
PROVENANCE_KEY = "segpets_provenance"
"""safetensors metadata: JSON of what the card says about the run (`provenance_of`)."""
VERSION_KEY = "segpets_version"
EXPECTED = (
    "a segpets model folder holds model.safetensors (the weights) and config.yaml (the run "
    "config), as Segmenter.save(DIR) and python -m segpets.export format=folder write them"
)
# metrics.json entries the card shows, with their labels.
CARD_METRICS = {
    "val/dice": "val Dice (mean per image)",
    "test/dice": "test Dice (mean per image)",
    "test/dice_dataset": "test Dice (dataset: all pixels pooled)",
    "test/iou": "test IoU (mean per image)",
}
NOT_RECORDED = "not recorded"


# ---------------------------------------------------------------------------- contract


def io_contract(
    data: DictConfig,
    threshold: float,
    output_stride: int | None,
    model_config: DictConfig,
    normalization_inside: bool,
    run_config: DictConfig,
) -> dict[str, Any]:
    """What a network takes and returns, as export's JSON and normalization.json state it.

    `normalization_inside`: the exported files normalise in their graph; a model folder's
    weights are the plain network, whose callers normalise first. `run_config` says the
    test-time augmentation and post-processing that segpets adds around the network.
    """
    size = int(data.image_size)
    if normalization_inside:
        description = "float32 RGB in [0, 1], NCHW"
    else:
        description = (
            "float32 RGB in [0, 1], NCHW, normalised per channel with `normalization` "
            "before the network sees it"
        )
    return {
        "input": {
            "name": "images",
            "description": description,
            "layout": "NCHW",
            "channels": "RGB",
            "dtype": "float32",
            "range": [0.0, 1.0],
            "shape": ["batch", 3, "height", "width"],
        },
        "normalization": {
            "mean": list(data.mean),
            "std": list(data.std),
            "applied_inside": normalization_inside,
            "formula": "(images - mean) / std, per channel",
        },
        "output": {
            "name": "logits",
            "dtype": "float32",
            "layout": "NCHW",
            "shape": ["batch", 1, "height", "width"],
            "meaning": (
                "logits of the pet class; probability = sigmoid(logits); "
                "pet where probability >= threshold"
            ),
        },
        "threshold": float(threshold),
        "image_size": size,
        "resize": (
            f"the model was trained on {size}x{size} images: resize to that size, predict, "
            "resize the probabilities back (bilinear) and threshold them"
        ),
        "output_stride": output_stride,
        "model": {"target": model_config._target_, "config": to_container(model_config)},
        "prediction": {
            **_prediction(run_config),
            "note": (
                "segpets predicts with these around the network (segpets.inference."
                "predict_probabilities); the network itself returns the logits alone"
            ),
        },
    }


# ---------------------------------------------------------------------------- provenance


def provenance_of(checkpoint: str | Path | None) -> dict[str, Any]:
    """What the run that wrote `checkpoint` recorded about it, for the model card.

    `metrics`: the CARD_METRICS of the run's metrics.json (beside `checkpoints/`), only
    when they score this checkpoint (metrics.json scores best.ckpt); `command`: the
    training command, from the run's .hydra/overrides.yaml (or metrics.json's overrides).
    """
    provenance: dict[str, Any] = {"metrics": {}, "metrics_note": None, "command": None}
    provenance["choices"] = {}
    if checkpoint is None:
        return provenance
    checkpoint = Path(checkpoint)
    provenance["checkpoint"] = str(checkpoint.absolute())
    run_dir = run_dir_of(checkpoint)
    recorded = _read_json(run_dir / "metrics.json")
    overrides = None
    if recorded is not None:
        provenance["choices"] = dict(recorded.get("choices") or {})
        provenance["data_summary"] = recorded.get("data_summary")
        best = recorded.get("best_checkpoint")
        if best and Path(best).name == checkpoint.name:
            for stage in ("val", "test"):
                for key, value in (recorded.get(stage) or {}).items():
                    if key in CARD_METRICS and isinstance(value, int | float):
                        provenance["metrics"][key] = float(value)
        else:
            scored = Path(best).name if best else "the weights at the end of training"
            provenance["metrics_note"] = f"the run's metrics.json scores {scored}"
        if recorded.get("overrides"):
            overrides = [str(o) for o in recorded["overrides"]]
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if overrides_file.is_file():
        with contextlib.suppress(Exception):  # a hand-edited file: the card says what it can
            overrides = [str(o) for o in OmegaConf.to_container(OmegaConf.load(overrides_file))]
    if overrides is not None:
        provenance["command"] = shlex.join(["python", "-m", "segpets.train", *overrides])
    return provenance


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------- card


def _training_data(data: DictConfig, data_name: str) -> str:
    """The card's "training data": the data option, its root and how masks were read."""
    root = OmegaConf.select(data, "root", default="?")
    if OmegaConf.select(data, "boundary", default=None) is not None or "images_dir" not in data:
        border = OmegaConf.select(data, "boundary", default="?")
        return f"{data_name}, root `{root}`, trimap border as {border}"
    foreground = OmegaConf.select(data, "foreground_values", default=None)
    ignore = OmegaConf.select(data, "ignore_value", default=None)
    masks = f"foreground values {foreground}" if foreground is not None else "0/1, 0/255 or JPEG"
    return f"{data_name}, root `{root}`, masks read as {masks}, ignore value {ignore}"


def _folder_split(data: DictConfig) -> str | None:
    """A folder run's stored split as the card states it; None for other data."""
    splits = OmegaConf.select(data, "splits", default=None)
    if not splits:
        return None
    from segpets.data.folder import split_hash

    counts = " / ".join(f"{split} {len(splits[split])}" for split in ("train", "val", "test"))
    return (
        f"{counts} images, by name in config.yaml's data.splits (test split hash "
        f"{split_hash(list(splits['test']))})"
    )


def _summary_row(summary: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """The card's "dataset summary" row from metrics.json's data_summary (data=folder)."""
    if not summary:
        return []
    pairs = summary.get("pairs") or {}
    masks = ", ".join(f"{kind} ({count})" for kind, count in (summary.get("masks") or {}).items())
    median = summary.get("foreground_median")
    foreground = f"{median:.1%}" if isinstance(median, int | float) else "?"
    text = (
        f"{summary.get('layout', '?')}; {sum(pairs.values())} pairs; masks {masks or '?'}; "
        f"median foreground {foreground}, {summary.get('empty_masks', '?')} empty masks "
        "(`python -m segpets.inspect` gives the whole fingerprint)"
    )
    return [("dataset summary", text)]


def _statistics_of(data: DictConfig) -> str:
    stored = OmegaConf.select(data, "normalize", default=None) == "stored"
    return " (the training split's own, data.normalize=dataset)" if stored else ""


def model_card(
    config: DictConfig, parameters: int, threshold: float, provenance: Mapping[str, Any]
) -> str:
    """README.md of a model folder: what the network is, what it was trained on, how well
    it scored, and how it was trained."""
    choices = provenance.get("choices") or {}
    model, data = config.model, config.data
    target = str(model._target_)
    choice = choices.get("model")
    options = ", ".join(f"{key}={value}" for key, value in model.items() if key != "_target_")
    data_choice = choices.get("data")
    data_name = f"`data={data_choice}`" if data_choice else f"`{data.get('_target_', '?')}`"
    val_every = OmegaConf.select(data, "val_every", default=None)
    split = (
        f"train: the lines of trainval.txt but every {val_every}th; val: every {val_every}th "
        "line of trainval.txt; test: test.txt"
        if val_every
        else NOT_RECORDED
    )
    size = int(data.image_size)
    metrics = provenance.get("metrics") or {}
    note = provenance.get("metrics_note")
    command = provenance.get("command")
    prediction = _prediction(config)
    rows = [
        ("architecture", f"`{target}`" + (f" (`model={choice}`)" if choice else "")),
        ("model options", options or "none"),
        ("parameters", f"{parameters:,}"),
        ("training data", _training_data(data, data_name)),
        ("split", _folder_split(data) or split),
        *_summary_row(provenance.get("data_summary")),
        (
            "image size",
            f"{size} x {size} (photos are resized to it; masks come back at their own size)",
        ),
        ("normalisation", f"mean {list(data.mean)}, std {list(data.std)}{_statistics_of(data)}"),
        ("precision", str(OmegaConf.select(config, "trainer.precision", default=NOT_RECORDED))),
        ("threshold", f"{threshold:g} (probability from which a pixel is pet)"),
        ("test-time augmentation", prediction["tta"]),
        ("post-processing", prediction["postprocess"]),
    ]
    for key, label in CARD_METRICS.items():
        value = metrics.get(key)
        shown = f"{value:.4f}" if value is not None else NOT_RECORDED
        if value is None and note:
            shown += f" ({note})"
        rows.append((label, shown))
    rows.append(("trained with", f"`{command}`" if command else NOT_RECORDED))
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    title = choice or target.rsplit(".", 1)[-1]
    return f"""# segpets model: {title}

A pet vs background segmentation network (one logit per pixel) trained with segpets
{segpets.__version__}. Scores are on the split named below, at {size} x {size} pixels.

| | |
|---|---|
{table}

## Use

```python
import segpets

segmenter = segpets.load("path/to/this/folder")  # no other file, no network
mask = segmenter.predict("photo.jpg")  # uint8 (H, W): 0 background, 255 pet
```

## Files

- `{WEIGHTS}`: the network's weights (the state dict of `config.yaml`'s `model`)
- `{CONFIG}`: the config of the run that trained it
- `{NORMALIZATION}`: the input contract: RGB in [0, 1], normalised with mean and std,
  resized to {size} x {size}; the output is logits
- `{CARD}`: this card
"""


# ---------------------------------------------------------------------------- writing


def _prediction(config: DictConfig) -> dict[str, str]:
    """The run's test-time augmentation and post-processing (class and options), by name."""
    options = inference_options(config)
    return {
        "tta": options["tta"],
        "postprocess": postprocess_name(options["postprocess"]) or "none",
    }


def save_folder(
    trained: TrainedModel, directory: str | Path, provenance: Mapping[str, Any]
) -> Path:
    """Write `trained` as a model folder into `directory` (created); return its path.

    Each file is written atomically, the weights last: an interrupted save leaves a
    folder that `load_folder` refuses for its missing weights, never a half-written file.
    """
    directory = Path(directory)
    model, config = trained.model, trained.run_config
    if getattr(model, "weights_from_checkpoints", False):
        raise SegpetsError(
            f"{directory}: an ensemble (model=ensemble) is built from its members' checkpoints "
            "and is not saved as a model folder; save each member, or export the ensemble "
            "with format=onnx or format=torchscript"
        )
    _check_target(directory)
    state = {
        key: value.detach().to("cpu", copy=True).contiguous()
        for key, value in model.state_dict().items()
    }
    parameters = sum(p.numel() for p in model.parameters())
    metadata = {
        "format": "pt",
        VERSION_KEY: segpets.__version__,
        PROVENANCE_KEY: json.dumps(dict(provenance)),
    }
    contract = io_contract(
        config.data,
        trained.threshold,
        getattr(model, "output_stride", None),
        config.model,
        normalization_inside=False,
        run_config=config,
    )
    card = model_card(config, parameters, trained.threshold, provenance)
    write_atomically(directory / CONFIG, OmegaConf.to_yaml(config).encode())
    write_atomically(directory / NORMALIZATION, (json.dumps(contract, indent=2) + "\n").encode())
    write_atomically(directory / CARD, card.encode())
    write_atomically(directory / WEIGHTS, save_safetensors(state, metadata=metadata))
    return directory


def _check_target(directory: Path) -> None:
    """Refuse a path that is a file, or a folder whose README.md / config.yaml are not a
    segpets model folder's (a repository, a run dir...): saving would overwrite them."""
    if directory.exists() and not directory.is_dir():
        raise SegpetsError(f"{directory} is a file; a model folder is a folder, new or existing")
    if not directory.is_dir():
        return
    ours = (directory / WEIGHTS).is_file() and _is_segpets_weights(directory / WEIGHTS)
    clashing = [name for name in FILES if (directory / name).exists()]
    if clashing and not ours:
        raise SegpetsError(
            f"{directory} already holds {', '.join(clashing)} and is not a segpets model "
            "folder: saving would overwrite them. Choose a new or empty folder"
        )


def _is_segpets_weights(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as weights:
            return VERSION_KEY in (weights.metadata() or {})
    except Exception:  # not a safetensors file
        return False


# ---------------------------------------------------------------------------- reading


def load_folder(directory: str | Path, device: str = "auto") -> tuple[TrainedModel, dict[str, Any]]:
    """The model folder `directory` (see the module docstring) on `device`, with its provenance."""
    directory = Path(directory)
    for name, what in ((CONFIG, "the run config"), (WEIGHTS, "the weights")):
        if not (directory / name).is_file():
            hint = (
                "; it looks like a run dir: load its checkpoints/best.ckpt instead"
                if (directory / "checkpoints").is_dir()
                else ""
            )
            raise SegpetsError(f"{directory}: no {name} ({what}) in this folder; {EXPECTED}{hint}")
    config = _read_config(directory / CONFIG)
    weights = directory / WEIGHTS
    try:
        data = weights.read_bytes()
        state = load_safetensors(data)
        with safe_open(str(weights), framework="pt") as opened:
            metadata = opened.metadata() or {}
    except Exception as error:  # safetensors raises its own error types
        raise SegpetsError(
            f"{weights}: not a readable safetensors file (truncated or another kind of file): "
            f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
        ) from None
    checkpoint = {
        "state_dict": {f"model.{key}": value for key, value in state.items()},
        CONFIG_KEY: to_container(config),
    }
    model = load_model(checkpoint, config, weights, option="path")
    target = pick_device(device)
    trained = TrainedModel(
        model=model.to(target),
        run_config=config,
        device=target,
        precision=OmegaConf.select(config, "trainer.precision", default=None),
        threshold=float(OmegaConf.select(config, "module.threshold", default=0.5)),
        checkpoints=[str(weights)],
        **inference_options(config),
    )
    try:
        provenance = json.loads(metadata.get(PROVENANCE_KEY, "{}"))
    except ValueError:
        provenance = {}
    return trained, provenance if isinstance(provenance, dict) else {}


def _read_config(path: Path) -> DictConfig:
    try:
        config = OmegaConf.load(path)
    except Exception as error:
        raise SegpetsError(f"{path}: not a readable YAML run config: {error}") from None
    if not isinstance(config, DictConfig) or not OmegaConf.select(config, "model._target_"):
        raise SegpetsError(f"{path}: not a segpets run config (it has no model._target_)")
    for key in ("data.image_size", "data.mean", "data.std"):
        if OmegaConf.select(config, key) is None:
            raise SegpetsError(f"{path}: not a segpets run config (it has no {key})")
    return config
