"""Audio decoding: inputs, mono mix, resampling, truncated and empty files, length and silence."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from mmfuse import InputError
from mmfuse.preprocess.audio import fix_length, load_audio, trim_silence


def _tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


def _wav_bytes(wave: np.ndarray, rate: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


# -- inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("source_rate", [8000, 22050, 44100, 16000])
def test_resampling_keeps_duration_and_pitch(source_rate):
    wave = load_audio((_tone(440, 1.0, source_rate), source_rate), rate=16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == 16000
    assert abs(_peak_hz(wave, 16000) - 440) <= 1


def test_channels_are_averaged_whichever_axis_they_are_on():
    left, right = _tone(300, 0.5, 8000), np.zeros(4000, np.float32)
    frames_first = load_audio((np.stack([left, right], axis=1), 8000), rate=8000)
    channels_first = load_audio((np.stack([left, right]), 8000), rate=8000)
    np.testing.assert_allclose(frames_first, left / 2, atol=1e-7)
    np.testing.assert_allclose(channels_first, left / 2, atol=1e-7)


@pytest.mark.parametrize("samples, expected", [
    (np.array([16384, -32768], np.int16), [0.5, -1.0]),
    (np.array([128, 192], np.uint8), [0.0, 0.5]),
    (np.array([2**30], np.int32), [0.5]),
])
def test_integer_samples_are_scaled(samples, expected):
    np.testing.assert_allclose(load_audio((samples, 100), rate=100), expected)


def test_files_and_bytes(tmp_path):
    stereo = np.stack([_tone(500, 0.25, 44100), _tone(500, 0.25, 44100)], axis=1)
    path = tmp_path / "tone.flac"
    soundfile.write(path, stereo, 44100)
    from_path = load_audio(path, rate=16000)
    from_str = load_audio(str(path), rate=16000)
    from_bytes = load_audio(path.read_bytes(), rate=16000)
    assert len(from_path) == 4000 and abs(_peak_hz(from_path, 16000) - 500) <= 4
    np.testing.assert_array_equal(from_path, from_str)
    np.testing.assert_array_equal(from_path, from_bytes)


@pytest.mark.parametrize("item, message", [
    ((np.zeros(0, np.float32), 8000), "is empty"),
    ((np.zeros((2, 3, 4)), 8000), "1-D or 2-D waveform"),
    ((np.array([0.0, np.nan]), 8000), "NaN or infinite"),
    ((np.zeros(10, bool), 8000), "float or integer samples"),
    ((np.zeros(10), 0), "positive integer sample rate"),
    ((np.zeros(10), 8000.5), "positive integer sample rate"),
    (3.5, "expected an audio path"),
])
def test_bad_waveforms(item, message):
    with pytest.raises(InputError, match=message):
        load_audio(item, rate=16000)


def test_rate_must_be_positive():
    with pytest.raises(ValueError, match="rate must be a positive int"):
        load_audio((np.zeros(10), 100), rate=0)


# -- broken files ----------------------------------------------------------------------------


def test_zero_length_wav_names_the_file(tmp_path):
    path = tmp_path / "silent.wav"
    path.write_bytes(_wav_bytes(np.zeros(0, np.float32), 8000))
    with pytest.raises(InputError, match=r"audio '.*silent\.wav' is empty"):
        load_audio(path, rate=16000)


def test_truncated_wav_names_the_file(tmp_path):
    whole = _wav_bytes(_tone(200, 0.5, 8000), 8000)
    path = tmp_path / "cut.wav"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"audio '.*cut\.wav' is truncated: its data chunk "
                                         r"declares 8000 bytes"):
        load_audio(path, rate=16000)


def test_truncated_ogg_names_the_file(tmp_path):
    whole = _wav_bytes(_tone(200, 2.0, 44100), 44100, fmt="OGG", subtype="VORBIS")
    path = tmp_path / "cut.ogg"
    path.write_bytes(whole[: len(whole) // 2])
    # Cut mid-stream, libsndfile either refuses the file or decodes what it can.
    with pytest.raises(InputError, match=r"audio '.*cut\.ogg'(: .*malformed| is truncated)"):
        load_audio(path, rate=16000)


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"RIFF\x00\x00", "cannot decode audio"),
    (b"definitely not audio" * 10, "cannot decode audio '.*junk.wav': Format not recognised"),
])
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "junk.wav"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_audio(path, rate=16000)


def test_missing_file():
    with pytest.raises(InputError, match="audio file not found: '/no/such/clip.wav'"):
        load_audio("/no/such/clip.wav", rate=16000)


def test_long_recordings_are_refused_from_the_header(tmp_path):
    path = tmp_path / "long.wav"
    path.write_bytes(_wav_bytes(np.zeros(3 * 8000, np.float32), 8000))
    with pytest.raises(InputError, match=r"lasts 3.0 s, above max_seconds=2"):
        load_audio(path, rate=8000, max_seconds=2)
    with pytest.raises(InputError, match="above max_seconds=2"):
        load_audio((np.zeros(3 * 8000), 8000), rate=8000, max_seconds=2)
    assert len(load_audio(path, rate=8000, max_seconds=None)) == 3 * 8000


# -- real files ------------------------------------------------------------------------------


def test_real_fsdd_wav_and_tuxpaint_ogg(data_root):
    wav = data_root / "fsdd" / "recordings" / "0_george_0.wav"
    ogg = data_root / "tuxpaint" / "stamps" / "symbols" / "clock_desc_fr.ogg"
    if not (wav.is_file() and ogg.is_file()):
        pytest.skip(f"FSDD or tuxpaint audio not found under {data_root}")
    info = soundfile.info(wav)
    speech = load_audio(wav, rate=16000)
    assert len(speech) == 2 * info.frames and speech.dtype == np.float32
    info = soundfile.info(ogg)
    assert (info.samplerate, info.channels) == (44100, 2)
    spoken = load_audio(ogg, rate=16000)
    assert spoken.ndim == 1 and abs(len(spoken) - info.frames * 16000 / 44100) <= 1
    assert np.abs(spoken).max() > 0.01


def test_real_ogg_cut_short_is_refused(data_root, tmp_path):
    ogg = data_root / "tuxpaint" / "stamps" / "symbols" / "clock_desc_fr.ogg"
    if not ogg.is_file():
        pytest.skip(f"tuxpaint audio not found under {data_root}")
    cut = tmp_path / "clock_cut.ogg"
    whole = ogg.read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"audio '.*clock_cut\.ogg' is truncated: the Ogg "
                                         r"stream ends without its end-of-stream page"):
        load_audio(cut, rate=16000)


# -- length and silence ----------------------------------------------------------------------


@pytest.mark.parametrize("mode, length_in, length_out", [
    ("pad", 50, 100), ("pad", 150, 150),
    ("trim", 50, 50), ("trim", 150, 100),
    ("both", 50, 100), ("both", 150, 100),
    ("none", 50, 50), ("none", 150, 150),
])
def test_fix_length(mode, length_in, length_out):
    wave = np.ones(length_in, np.float32)
    fixed = fix_length(wave, rate=100, seconds=1.0, mode=mode)
    assert len(fixed) == length_out and fixed.dtype == np.float32
    assert fixed[: min(length_in, length_out)].min() == 1 and fixed[length_in:].sum() == 0


def test_fix_length_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode must be one of"):
        fix_length(np.ones(3), 100, 1.0, mode="loop")
    with pytest.raises(ValueError, match="seconds must be positive"):
        fix_length(np.ones(3), 100, 0.0)


def test_trim_silence_cuts_quiet_ends_only():
    rate = 8000
    tone = _tone(300, 0.5, rate)
    noise_floor = np.full(rate, 1e-4, np.float32)  # 1 s at -74 dB below the tone
    wave = np.concatenate([noise_floor, tone, noise_floor])
    trimmed = trim_silence(wave, rate, top_db=40)
    assert len(tone) <= len(trimmed) <= len(tone) + 2 * 0.025 * rate
    assert len(trim_silence(wave, rate, top_db=90)) == len(wave)  # floor counts as sound


def test_trim_silence_leaves_silent_and_tiny_waves_alone():
    silent = np.zeros(800, np.float32)
    assert trim_silence(silent, 8000) is silent
    tiny = np.ones(10, np.float32)
    assert trim_silence(tiny, 8000) is tiny
