"""The bundled real datasets (``mmfuse.datasets.load_dataset("av-digits")``).

The code lives in :mod:`mmfuse.data.datasets`; this module is the short public name.
"""

from .data.datasets import dataset_info, list_datasets, load_dataset, verify_dataset

__all__ = ["dataset_info", "list_datasets", "load_dataset", "verify_dataset"]
