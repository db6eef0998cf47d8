"""Per-modality decoding and cleaning: pure functions raising :class:`~mmfuse.InputError`."""

from .audio import fix_length, load_audio, resample, trim_silence
from .image import image_to_array, load_image, resize_image
from .text import clean_text

__all__ = ["clean_text", "fix_length", "image_to_array", "load_audio", "load_image", "resample",
           "resize_image", "trim_silence"]
