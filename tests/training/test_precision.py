"""`trainer.precision=auto` follows what the hardware computes natively; explicit values run as asked."""

import json
import warnings

import pytest
import torch

from segpets import precision
from segpets.errors import ConfigError
from segpets.precision import auto_precision, resolve_precision
from segpets.train import train
from tests.helpers import TINY_UNET, compose_train, tiny_run_overrides


def fake_cpu(monkeypatch, isa: str, avx512_bf16: bool = False, amx: bool = False) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: isa)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    precision._warn_emulated_bf16.cache_clear()


def fake_gpu(monkeypatch, bf16: bool, name: str = "Tesla T4") -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: name)


@pytest.mark.parametrize(
    ("isa", "avx512_bf16", "amx", "expected"),
    [
        ("AVX2", False, False, "32-true"),
        ("AVX512", False, False, "32-true"),  # AVX512 without its bf16 extension emulates it
        ("AVX512", True, False, "bf16-mixed"),
        ("AMX", True, True, "bf16-mixed"),
        ("DEFAULT", False, False, "32-true"),
    ],
)
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_computes_it(
    monkeypatch, isa, avx512_bf16, amx, expected
):
    fake_cpu(monkeypatch, isa, avx512_bf16, amx)
    assert auto_precision("auto") == expected
    assert auto_precision("cpu") == expected
    assert resolve_precision("auto", "cpu") == expected


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
def test_auto_on_a_gpu_is_bf16_where_supported_else_fp16(monkeypatch, bf16, expected):
    fake_gpu(monkeypatch, bf16)
    assert auto_precision("auto") == expected
    assert auto_precision("gpu") == expected
    assert auto_precision("cpu") != "16-mixed"  # trainer=cpu on a GPU machine decides by the CPU


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    fake_gpu(monkeypatch, bf16=False)
    with pytest.raises(ConfigError, match=r"\(Tesla T4\) cannot compute in bfloat16"):
        resolve_precision("bf16-mixed", "gpu")
    assert resolve_precision("16-mixed", "gpu") == "16-mixed"


@pytest.mark.parametrize("explicit", ["bf16-mixed", "16-mixed", "16"])
def test_half_precision_on_an_emulating_cpu_runs_as_asked_and_warns_once(monkeypatch, explicit):
    fake_cpu(monkeypatch, "AVX2")
    with pytest.warns(UserWarning) as caught:
        assert resolve_precision(explicit, "cpu") == explicit
        assert resolve_precision(explicit, "auto") == explicit
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "AVX2" in message and "32-true" in message and explicit in message


def test_half_precision_on_a_native_bf16_cpu_does_not_warn(monkeypatch):
    fake_cpu(monkeypatch, "AVX512", avx512_bf16=True, amx=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
        assert resolve_precision("32-true", "cpu") == "32-true"


def test_a_gpu_trainer_without_a_gpu_is_a_config_error(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_train(tmp_path, [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer=gpu"])
    with pytest.raises(ConfigError, match=r"no CUDA GPU.*trainer=cpu"):
        train(cfg)


def test_the_run_records_the_resolved_precision_and_the_cpu(synthetic_root, tmp_path):
    cfg = compose_train(
        tmp_path, [*tiny_run_overrides(synthetic_root), *TINY_UNET, "trainer.max_epochs=1"]
    )
    assert cfg.trainer.precision == "auto"
    metrics = train(cfg)
    expected = auto_precision(cfg.trainer.accelerator)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["precision"] == expected
    assert written["machine"]["cpu_isa"] == precision.cpu_isa_label()
    assert written["machine"]["torch"] == torch.__version__
    checkpoint = torch.load(metrics["best_checkpoint"], map_location="cpu", weights_only=True)
    assert checkpoint["segpets_config"]["trainer"]["precision"] == expected

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    plugin = events.PluginTagToContent("hparams")
    session = next(content for tag, content in plugin.items() if "session_start" in tag)
    assert expected.encode() in session and precision.cpu_isa_label().encode() in session
