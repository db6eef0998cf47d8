"""Pretrained audio encoders (Google speech_embedding, aiSFX sound effects)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..._errors import MissingDependencyError
from ...preprocess.dsp import mel_filterbank, window
from ..registry import register_encoder
from .runtime import (AISFX_CHECKPOINT_HASH, PretrainedEncoder, TorchExportedEncoder,
                      check_torch_device, import_optional, make_session, mean_over_parts,
                      package_file, torch_export)

log = logging.getLogger("mmfuse.encoders.pretrained")


def _positive_seconds(value: Any) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value <= 0):
        raise ValueError(f"max_seconds must be a positive number or None; got {value!r}")


@register_encoder("speech-embedding", auto_rank=1, modality="audio", dim=96, extra="audio",
                  cost=15.0,
                  description="Google speech_embedding (openwakeword 0.4.0 ONNX), 16 kHz, "
                              "mean over 0.76 s windows, 96-d")
class SpeechEmbeddingEncoder(PretrainedEncoder):
    """Google's speech_embedding, as shipped (ONNX) by openwakeword 0.4.0, 96-d.

    16 kHz audio (int16 scale) -> openwakeword's mel-spectrogram model (``x / 10 + 2``, as
    openwakeword does) -> windows of 76 frames every 8 frames -> embedding model -> mean
    over the windows. Clips shorter than 1 s are centred in silence to 1 s. The
    embeddings are not centred: standardise them before use (the fusion strategies do).

    Parameters
    ----------
    max_seconds : float or None, default=600
        Longer recordings are refused (checked from the header, before decoding).
    device, threads, batch_size
        See :class:`PretrainedEncoder`.
    """

    name = "speech-embedding"
    modality = "audio"
    extra = "audio"
    output_dim = 96
    sample_rate = 16000
    window, step, min_samples = 76, 8, 16000
    requires = ("onnxruntime", "openwakeword")

    def __init__(self, *, max_seconds: float | None = 600.0, device: str = "cpu",
                 threads: int | None = None, batch_size: int = 32):
        super().__init__(device=device, threads=threads, batch_size=batch_size)
        self.max_seconds = max_seconds

    def _check_params(self) -> None:
        super()._check_params()
        _positive_seconds(self.max_seconds)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "scale": "int16", "mono": True,
                "min_samples": self.min_samples, "pad": "centre",
                "melspec_transform": "x/10+2",
                "window_frames": self.window, "step_frames": self.step, "pooling": "mean"}

    @staticmethod
    def _files() -> tuple[Path, Path]:
        models = ("resources", "models")
        return (package_file("openwakeword", "audio", *models, "melspectrogram.onnx"),
                package_file("openwakeword", "audio", *models, "embedding_model.onnx"))

    def weights_hash(self) -> str:
        from ...cache import hash_file

        return "".join(hash_file(path, memo=True) for path in self._files())

    def _load(self) -> None:
        melspec, embedding = self._files()
        # The mel model runs per clip inside the decoding workers: one thread each, and on
        # the CPU even when the embedding model is on CUDA (per clip, a GPU round trip would
        # cost more than the model).
        self._melspec = make_session(melspec, "cpu", 1, self.extra)
        self._session = make_session(embedding, self.device, self.threads, self.extra)

    def _prepare(self, item: Any) -> np.ndarray:
        from ...preprocess.audio import load_audio

        wave = load_audio(item, rate=self.sample_rate, max_seconds=self.max_seconds)
        return self.melspectrogram(wave)

    def melspectrogram(self, wave: np.ndarray) -> np.ndarray:
        """(frames, 32) mel spectrogram of a float waveform in [-1, 1] at 16 kHz."""
        self._ensure_loaded()
        pcm = np.clip(np.rint(np.asarray(wave, dtype=np.float32) * 32768.0), -32768, 32767)
        if pcm.shape[0] < self.min_samples:
            # Centre short clips in the silence: padding only the end put the digital silence
            # in every window at one side and cut leave-one-speaker-out accuracy on spoken
            # digits from 0.97 to 0.57 (benchmarks/bench_pretrained_accuracy.py's data).
            extra = self.min_samples - pcm.shape[0]
            pcm = np.pad(pcm, (extra // 2, extra - extra // 2))
        spec = self._run(self._melspec, {"input": pcm[None, :].astype(np.float32)})
        return np.ascontiguousarray(np.squeeze(spec, axis=(0, 1)) / 10.0 + 2.0, dtype=np.float32)

    def _windows(self, spec: np.ndarray) -> np.ndarray:
        view = np.lib.stride_tricks.sliding_window_view(spec, self.window, axis=0)
        return view[::self.step].transpose(0, 2, 1)  # (n_windows, 76, 32)

    def _embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        return mean_over_parts(
            lambda x: self._run(self._session, {"input_1": x[..., None]}),
            [self._windows(spec) for spec in batch], self.dim)


@register_encoder("sound-effects", auto_rank=2, modality="audio", dim=512, extra="audio",
                  cost=20.0,
                  description="aiSFX CNN trained on sound-effect libraries, 44.1 kHz log-mel, "
                              "mean over ~2.3 s blocks, 512-d; exported to ONNX on first use")
class SoundEffectsEncoder(TorchExportedEncoder):
    """aiSFX embeddings (ISMIR 2022 cross-dataset sound-effects model), 512-d.

    44.1 kHz mono, peak-normalised -> 96-band HTK mel power spectrogram (2048-sample Hann
    window, hop 1024, filters normalised to unit area), ``log10(1 + 10000 x) / 9.4578``
    (aiSFX's "original" scaling) -> blocks of 100 frames (2.3 s) every 50 frames, the last
    partial block dropped (a clip shorter than a block is zero-padded) -> CNN -> mean over
    blocks. aiSFX computes the spectrogram with essentia or librosa; this is a numpy
    re-implementation of its librosa path, with time on the first axis as the model expects.

    Parameters
    ----------
    max_seconds : float or None, default=600
        Longer recordings are refused (checked from the header, before decoding).
    device, threads, batch_size
        See :class:`PretrainedEncoder`.
    """

    name = "sound-effects"
    modality = "audio"
    extra = "audio"
    output_dim = 512
    sample_rate = 44100
    n_fft, hop, n_mels = 2048, 1024, 96
    block, block_hop = 100, 50
    log_max = 9.457798957824707
    requires = ("onnxruntime",)
    #: the network is exported to ONNX on first use from aisfx 0.1.2's checkpoint (aisfx is
    #: installed with ``--no-deps``: it pins numpy 1.23 and librosa); the CUDA path runs
    #: aisfx's PyTorch network itself
    export_requires = ("aisfx", "torch", "onnx")
    weights_file = ("aisfx", "models", "checkpoint.pth")
    cuda_backend = "torch"

    def __init__(self, *, max_seconds: float | None = 600.0, device: str = "cpu",
                 threads: int | None = None, batch_size: int | None = None):
        super().__init__(device=device, threads=threads, batch_size=batch_size)
        self.max_seconds = max_seconds

    def _check_device(self) -> None:
        check_torch_device(self.device, "fp32")

    def _check_params(self) -> None:
        super()._check_params()
        _positive_seconds(self.max_seconds)

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"sample_rate": self.sample_rate, "mono": True, "peak_normalize": True,
                "n_fft": self.n_fft, "hop": self.hop, "window": "hann", "center": "reflect",
                "n_mels": self.n_mels, "mel_scale": "htk", "fmin": 0.0,
                "fmax": self.sample_rate / 2, "mel_norm": "l1", "log": "log10(1+1e4x)",
                "scale": self.log_max, "block_frames": self.block,
                "block_hop": self.block_hop, "pooling": "mean"}

    @classmethod
    def _weights_hash_static(cls) -> str:
        # Known without aisfx installed, so an export made earlier still serves.
        return AISFX_CHECKPOINT_HASH

    def torch_module(self) -> Any:
        """The aiSFX embedding CNN ((blocks, 100, 96) -> (blocks, 512)) on the CPU, in eval
        mode; the one exported to ONNX and the one the CUDA path runs (needs ``aisfx``)."""
        torch = import_optional("torch", self.extra)
        cnn2d = import_optional("aisfx.models.cnn2d", self.extra)
        # The checkpoint pickles numpy scalars: weights_only=True refuses it on torch >= 2.6.
        # It is a file of an installed package, not user input.
        state, _ = torch.load(self._weights_path(), map_location="cpu", weights_only=False)
        net = cnn2d.EmbeddingNet("max", 3, 1, 64)
        prefix = "embedding_net."
        net.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                             if k.startswith(prefix)})
        return net.eval()

    def _export(self, path: Path) -> None:
        from ...cache import hash_file

        got = hash_file(self._weights_path(), memo=True)
        if got != AISFX_CHECKPOINT_HASH:
            raise MissingDependencyError(
                f"aisfx's checkpoint has hash {got}, expected {AISFX_CHECKPOINT_HASH} (install "
                "aisfx==0.1.2 with --no-deps)")
        torch = import_optional("torch", self.extra)
        example = torch.from_numpy(np.random.default_rng(0).random(
            (2, self.block, self.n_mels)).astype(np.float32))
        torch_export(self.torch_module(), example, path, "spectrogram", "embedding",
                      {0: "batch"}, self.extra)

    def _prepare(self, item: Any) -> np.ndarray:
        from ...preprocess.audio import load_audio

        wave = load_audio(item, rate=self.sample_rate, max_seconds=self.max_seconds)
        return self.spectrogram(wave)

    def spectrogram(self, wave: np.ndarray) -> np.ndarray:
        """(frames, 96) scaled log-mel spectrogram of a 44.1 kHz waveform."""
        import scipy.fft

        wave = np.asarray(wave, dtype=np.float32)
        peak = float(np.max(np.abs(wave))) if wave.size else 0.0
        if peak > 0:
            wave = wave / peak
        half = self.n_fft // 2
        wave = np.pad(wave, half, mode="reflect" if wave.shape[0] > half else "constant")
        frames = np.lib.stride_tricks.sliding_window_view(wave, self.n_fft)[::self.hop]
        spectrum = scipy.fft.rfft(frames * window(self.n_fft, "hann"), axis=1)  # complex64
        power = spectrum.real ** 2 + spectrum.imag ** 2
        # Sparse product: a dense 1025x96 matmul goes through multi-threaded BLAS, whose
        # thread hand-offs cost 15x the arithmetic on a busy 2-core machine.
        mel = (mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, norm="sum",
                               sparse=True) @ power.T).T
        return (np.log10(mel * 10000.0 + 1.0) / self.log_max).astype(np.float32)

    def _blocks(self, spec: np.ndarray) -> np.ndarray:
        frames = spec.shape[0]
        count = max(1, (frames - self.block) // self.block_hop + 1) if frames >= self.block else 1
        needed = (count - 1) * self.block_hop + self.block
        if frames < needed:
            spec = np.pad(spec, ((0, needed - frames), (0, 0)))
        view = np.lib.stride_tricks.sliding_window_view(spec, self.block, axis=0)
        return view[::self.block_hop][:count].transpose(0, 2, 1)

    def _embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        run = self._runner if self._runner is not None else (
            lambda x: self._run(self._session, {self._input: x}))
        return mean_over_parts(run, [self._blocks(spec) for spec in batch], self.dim)
