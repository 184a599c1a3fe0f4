"""GPU numerics settings (leaklib.gpu): set explicitly, returned, recorded in each run's config.json.

There is no GPU here; the CUDA flags can still be set and read on a CPU-only torch.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from leaklib.gpu import configure_determinism, determinism_settings

FLAGS = ("cuda_matmul_allow_tf32", "cudnn_allow_tf32", "cudnn_benchmark", "cudnn_deterministic")


@pytest.fixture(autouse=True)
def restore_flags():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    yield
    (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
     torch.backends.cudnn.deterministic) = saved


def _flags() -> dict:
    return {"cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic}


def test_default_is_deterministic_without_tf32_and_the_flags_are_set(monkeypatch):
    monkeypatch.delenv("LEAKLIB_TF32", raising=False)
    # start from the opposite of every default, so that each flag must actually be set
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = False
    settings = configure_determinism(torch.device("cpu"))
    expected = {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False, "cudnn_benchmark": False,
                "cudnn_deterministic": True}
    assert _flags() == expected
    assert {k: settings[k] for k in FLAGS} == expected
    assert settings["device"] == "cpu" and settings["float32_matmul_precision"] == "highest"
    assert settings == {"device": "cpu", **determinism_settings()}


def test_tf32_and_nondeterminism_on_request(monkeypatch):
    settings = configure_determinism("cpu", tf32=True, deterministic=False)
    assert _flags() == {"cuda_matmul_allow_tf32": True, "cudnn_allow_tf32": True, "cudnn_benchmark": True,
                        "cudnn_deterministic": False}
    assert settings["cuda_matmul_allow_tf32"] and settings["float32_matmul_precision"] != "highest"
    monkeypatch.setenv("LEAKLIB_TF32", "1")
    assert configure_determinism("cpu")["cudnn_allow_tf32"] is True
    monkeypatch.setenv("LEAKLIB_TF32", "0")
    assert configure_determinism("cpu")["cudnn_allow_tf32"] is False


def test_the_trainer_records_the_settings_in_config_json(tmp_path, monkeypatch):
    from leaklib.profiles import get_profile
    from leaklib.runs import read_json
    from leaklib.train import RunConfig, train_run

    monkeypatch.delenv("LEAKLIB_TF32", raising=False)
    torch.backends.cudnn.benchmark = True
    profile = replace(get_profile("smoke"), epochs=1, train_subset=32, test_subset=20, train_eval_subset=20)
    config = RunConfig(profile, "digits", 30.0, 1)
    train_run(config, tmp_path, device="cpu", progress=False, log=lambda s: None)
    recorded = read_json(config.folder(tmp_path) / "config.json")["determinism"]
    assert recorded["device"] == "cpu"
    assert {k: recorded[k] for k in FLAGS} == {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False,
                                               "cudnn_benchmark": False, "cudnn_deterministic": True}


def test_analyses_load_the_network_with_the_same_explicit_settings(tmp_path, monkeypatch):
    """Analyses in a process that trained nothing ran with PyTorch's defaults (cuDNN TF32 on): a chapter's
    numbers on a GPU depended on whether its runs were trained in the same process or reused."""
    from leaklib.profiles import get_profile
    from leaklib.sweep import _run_settings
    from leaklib.train import RunConfig, load_model, train_run

    monkeypatch.delenv("LEAKLIB_TF32", raising=False)
    profile = replace(get_profile("smoke"), epochs=1, train_subset=32, test_subset=20, train_eval_subset=20)
    config = RunConfig(profile, "digits", 30.0, 1)
    train_run(config, tmp_path, device="cpu", progress=False, log=lambda s: None)
    torch.backends.cudnn.allow_tf32 = True  # PyTorch's default in a fresh process
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.deterministic = False
    load_model(config, tmp_path, "cpu")
    assert _flags() == {"cuda_matmul_allow_tf32": False, "cudnn_allow_tf32": False, "cudnn_benchmark": False,
                        "cudnn_deterministic": True}
    plain = _run_settings(config, tmp_path, "clean")
    assert "tf32" not in plain  # the float32 caches keep their keys
    monkeypatch.setenv("LEAKLIB_TF32", "1")  # TF32 on request: the analysis caches say so
    load_model(config, tmp_path, "cpu")
    assert torch.backends.cudnn.allow_tf32 and _run_settings(config, tmp_path, "clean") == {**plain, "tf32": True}
