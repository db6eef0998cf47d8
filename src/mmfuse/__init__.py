"""mmfuse: multimodal fusion for image recognition.

``import mmfuse`` stays light: numpy, pandas and scikit-learn only. Heavy parts (PyTorch,
ONNX Runtime, matplotlib) are imported where they are used.
"""

from ._errors import InputError, MissingDependencyError, MmfuseError

__version__ = "0.1.0"

__all__ = ["InputError", "MissingDependencyError", "MmfuseError", "MultimodalClassifier",
           "__version__", "load"]


def __getattr__(name: str):
    # Lazy so that `import mmfuse` does not import scikit-learn models until they are needed.
    if name == "MultimodalClassifier":
        from .estimator import MultimodalClassifier

        return MultimodalClassifier
    if name == "load":
        from .persist import load

        return load
    raise AttributeError(f"module 'mmfuse' has no attribute {name!r}")
