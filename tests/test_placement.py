"""Placing a run on a device (mmfuse.placement): which encoder runs where, the heads'
``device`` directly and inside ``auto``."""

from __future__ import annotations

import pandas as pd

from mmfuse.placement import encoder_device, head_params, place_encoders


def test_encoder_device_per_backend(monkeypatch):
    import mmfuse.devices as devices

    assert encoder_device("hog", "cuda") is None  # classical: no device
    assert encoder_device("efficientnet-lite0", "cuda") == "cuda"  # PyTorch path
    assert encoder_device("sound-effects", "cuda") == "cuda"
    assert encoder_device("efficientnet-lite0", "cpu") == "cpu"
    monkeypatch.setattr(devices, "onnxruntime_has_cuda", lambda: False)
    assert encoder_device("minilm", "cuda") == "cpu"  # ONNX-only, no onnxruntime-gpu
    monkeypatch.setattr(devices, "onnxruntime_has_cuda", lambda: True)
    assert encoder_device("speech-embedding", "cuda") == "cuda"


def test_place_encoders_builds_cuda_encoders_without_loading_them():
    frame = pd.DataFrame({"image": ["a.jpg"], "text": ["some words"]})
    spec = place_encoders({"image": "efficientnet-lite0", "text": "tfidf"}, frame, "cuda")
    assert spec["text"] == "tfidf"
    assert spec["image"].name == "efficientnet-lite0" and spec["image"].device == "cuda"
    assert place_encoders(None, frame, "cuda") is None


def test_head_params_reach_heads_directly_and_inside_auto():
    params = head_params(["late", "gmu", "auto"], "cuda", {"auto": {"neural": True}})
    assert "late" not in params and params["gmu"] == {"device": "cuda"}
    assert params["auto"]["neural"] is True
    assert params["auto"]["candidate_params"] == {h: {"device": "cuda"}
                                                 for h in ("gmu", "attention", "lowrank")}
