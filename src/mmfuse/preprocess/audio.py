"""Audio decoding and preprocessing: any supported input becomes float32 mono at one rate."""

from __future__ import annotations

import io
import math
import os
import struct
from typing import Any

import numpy as np

from .._errors import InputError
from .._io import read_input_file

LENGTH_MODES = ("pad", "trim", "both", "none")


def load_audio(item: Any, *, rate: int, max_seconds: float | None = 600.0) -> np.ndarray:
    """Decode audio as a float32 mono waveform resampled to ``rate``.

    Parameters
    ----------
    item : str, os.PathLike, bytes or (numpy.ndarray, int)
        A file path (WAV, FLAC, OGG/Vorbis, ... anything libsndfile reads), the bytes of
        such a file, or a ``(waveform, sample_rate)`` pair. A waveform is 1-D, or 2-D with
        channels along its shorter axis; integer samples are scaled to [-1, 1].
    rate : int
        Sample rate of the result, in Hz.
    max_seconds : float or None, default=600.0
        Refuse longer recordings (checked from the file header, before decoding).

    Returns
    -------
    numpy.ndarray
        1-D float32 waveform at ``rate`` (channels averaged).

    Raises
    ------
    InputError
        If the file is missing, unreadable, truncated, empty or too long, or the waveform
        has an unsupported shape or dtype.

    Examples
    --------
    >>> import numpy as np
    >>> load_audio((np.zeros((8000, 2), dtype=np.int16), 8000), rate=16000).shape
    (16000,)
    """
    if not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"rate must be a positive int (Hz); got {rate!r}")
    if isinstance(item, tuple) and len(item) == 2:
        wave, source_rate = _from_pair(item, max_seconds)
        label = "(waveform, rate) pair"
    elif isinstance(item, (bytes, bytearray, memoryview)):
        label = "(given as bytes)"
        wave, source_rate = _decode(bytes(item), label, max_seconds)
    elif isinstance(item, (str, os.PathLike)):
        path = os.fspath(item)
        label = repr(path)
        data = read_input_file(path, "audio")
        wave, source_rate = _decode(data, label, max_seconds)
    else:
        raise InputError("expected an audio path, encoded bytes or a (waveform, sample_rate) "
                          f"pair; got {type(item).__name__}")
    if wave.shape[0] == 0:
        raise InputError(f"audio {label} is empty (zero samples)")
    mono = wave.mean(axis=1) if wave.shape[1] > 1 else wave[:, 0]
    return resample(mono, source_rate, int(rate))


def resample(wave: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    """Polyphase resampling from ``source_rate`` to ``rate`` (float32 out)."""
    wave = np.asarray(wave, dtype=np.float32)
    if source_rate == rate:
        return wave
    from scipy.signal import resample_poly

    common = math.gcd(int(source_rate), int(rate))
    out = resample_poly(wave, int(rate) // common, int(source_rate) // common)
    return out.astype(np.float32, copy=False)


def fix_length(wave: np.ndarray, rate: int, seconds: float, mode: str = "both") -> np.ndarray:
    """Pad with zeros at the end and/or trim the end to ``seconds``.

    Parameters
    ----------
    wave : numpy.ndarray
        1-D waveform.
    rate : int
        Its sample rate.
    seconds : float
        Target duration.
    mode : {"pad", "trim", "both", "none"}, default="both"
        ``"pad"`` only lengthens short waves, ``"trim"`` only shortens long ones,
        ``"both"`` does either (exact length), ``"none"`` returns ``wave`` unchanged.

    Returns
    -------
    numpy.ndarray
        The waveform, same dtype.
    """
    if mode not in LENGTH_MODES:
        raise ValueError(f"mode must be one of {LENGTH_MODES}; got {mode!r}")
    if seconds <= 0:
        raise ValueError(f"seconds must be positive; got {seconds!r}")
    target = round(rate * seconds)
    if mode in ("trim", "both") and len(wave) > target:
        return wave[:target]
    if mode in ("pad", "both") and len(wave) < target:
        return np.pad(wave, (0, target - len(wave)))
    return wave


def trim_silence(wave: np.ndarray, rate: int, top_db: float = 40.0,
                 frame_seconds: float = 0.025, hop_seconds: float = 0.010) -> np.ndarray:
    """Cut leading and trailing frames quieter than ``top_db`` below the loudest frame.

    Parameters
    ----------
    wave : numpy.ndarray
        1-D waveform.
    rate : int
        Its sample rate.
    top_db : float, default=40.0
        Frames whose RMS energy is this many dB below the peak frame count as silence.
    frame_seconds, hop_seconds : float, default=0.025, 0.010
        Analysis frame length and step.

    Returns
    -------
    numpy.ndarray
        A view of ``wave`` without the silent ends; unchanged if it is silent throughout.
    """
    frame = max(1, round(rate * frame_seconds))
    hop = max(1, round(rate * hop_seconds))
    if len(wave) <= frame:
        return wave
    # Frame energies from a cumulative sum: O(n) memory even for long recordings.
    energy = np.concatenate(([0.0], np.cumsum(np.square(wave, dtype=np.float64))))
    starts = np.arange(0, len(wave) - frame + 1, hop)
    power = (energy[starts + frame] - energy[starts]) / frame
    peak = power.max()
    if not np.isfinite(peak) or peak <= 0:
        return wave  # silent throughout, or non-finite samples (load_audio refuses those)
    loud = np.flatnonzero(power >= peak * 10.0 ** (-top_db / 10.0))
    # A loud last frame keeps the samples after it too (they fit no whole frame).
    end = len(wave) if loud[-1] == len(starts) - 1 else loud[-1] * hop + frame
    return wave[loud[0] * hop:end]


# -- helpers ---------------------------------------------------------------------------------


def _decode(data: bytes, label: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    import soundfile

    if not data:
        raise InputError(f"cannot decode audio {label}: the file is empty")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as sound:
            source_rate, declared = sound.samplerate, sound.frames
            _check_duration(declared, source_rate, max_seconds, label)
            wave = sound.read(dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        # libsndfile's own words, without soundfile's "Error opening <BytesIO at 0x...>".
        reason = getattr(exc, "error_string", None) or str(exc)
        raise InputError(f"cannot decode audio {label}: {reason}") from None
    problem = _truncation(data, wave.shape[0], declared)
    if problem:
        raise InputError(f"audio {label} is truncated: {problem}")
    if not np.all(np.isfinite(wave)):
        raise InputError(f"audio {label} contains NaN or infinite samples; expected finite "
                         "sample values")
    return wave, source_rate


def _truncation(data: bytes, decoded: int, declared: int) -> str | None:
    """Say why a file looks cut short, or None. libsndfile decodes what it can silently."""
    if decoded < declared:
        return f"decoded {decoded} of the {declared} frames its header declares"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _wav_truncation(data)
    if data[:4] == b"OggS":
        # The last page of a complete Ogg stream carries the end-of-stream flag.
        last_page = data.rfind(b"OggS")
        if len(data) < last_page + 27 or not data[last_page + 5] & 0x04:
            return "the Ogg stream ends without its end-of-stream page"
    return None


def _wav_truncation(data: bytes) -> str | None:
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset:offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4:offset + 8])
        if chunk_id == b"data":
            available = len(data) - offset - 8
            # 0 and 0xFFFFFFFF mean "unknown" (streamed writers); nothing to compare with.
            if size not in (0, 0xFFFFFFFF) and available < size:
                return f"its data chunk declares {size} bytes but only {available} are present"
            return None
        offset += 8 + size + (size & 1)
    return None


def _check_duration(frames: int, rate: int, max_seconds: float | None, label: str) -> None:
    if max_seconds is not None and rate > 0 and frames / rate > max_seconds:
        raise InputError(f"audio {label} lasts {frames / rate:.1f} s, above "
                         f"max_seconds={max_seconds:g}; cut it or raise max_seconds")


def _from_pair(item: tuple[Any, Any], max_seconds: float | None) -> tuple[np.ndarray, int]:
    wave, source_rate = item
    label = "(waveform, rate) pair"
    if (isinstance(source_rate, bool) or not isinstance(source_rate, (int, np.integer, float))
            or source_rate <= 0 or int(source_rate) != source_rate):
        raise InputError(f"expected a positive integer sample rate in the {label}; "
                         f"got {source_rate!r}")
    wave = np.asarray(wave)
    if wave.ndim == 1:
        wave = wave[:, None]
    elif wave.ndim == 2:
        # Recordings have far more frames than channels: channels are the shorter axis.
        wave = wave.T if wave.shape[0] < wave.shape[1] else wave
    else:
        raise InputError(f"expected a 1-D or 2-D waveform in the {label}; got shape {wave.shape}")
    if wave.dtype.kind == "f":
        if not np.all(np.isfinite(wave)):
            raise InputError(f"the waveform in the {label} contains NaN or infinite values")
        wave = wave.astype(np.float32, copy=False)
    elif wave.dtype.kind == "i":
        wave = wave.astype(np.float32) / float(2 ** (8 * wave.dtype.itemsize - 1))
    elif wave.dtype == np.uint8:  # 8-bit PCM is unsigned, centred on 128
        wave = (wave.astype(np.float32) - 128.0) / 128.0
    else:
        raise InputError(f"expected float or integer samples in the {label}; got {wave.dtype}")
    _check_duration(wave.shape[0], int(source_rate), max_seconds, label)
    return wave, int(source_rate)
