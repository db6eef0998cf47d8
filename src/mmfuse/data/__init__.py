"""Input data for mmfuse; the bundled real datasets are in :mod:`mmfuse.data.datasets`.

Kept light: submodules are imported where they are used.
"""
