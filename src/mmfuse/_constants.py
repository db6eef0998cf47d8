"""Names shared by every layer (data, encoders, evaluation): defined once here."""

#: The raw modalities mmfuse reads (column kinds); pre-extracted features are "features".
MODALITIES = ("image", "text", "audio")
#: What an unreadable item does: raise, or count as missing and be reported.
ON_ERROR = ("raise", "skip")
