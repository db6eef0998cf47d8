"""Calibrated probabilities and conformal prediction sets around any fusion strategy
(:mod:`~mmfuse.uncertainty.calibration`, :mod:`~mmfuse.uncertainty.conformal`, fitted on
inner folds by :mod:`~mmfuse.uncertainty.fit`), and their metrics
(:mod:`~mmfuse.uncertainty.metrics`)."""

from .calibration import CALIBRATIONS, IsotonicCalibration, TemperatureScaling
from .conformal import SCORES, ConformalSets
from .fit import FewCalibrationGroupsWarning, Uncertainty, fit_uncertainty

__all__ = ["CALIBRATIONS", "SCORES", "ConformalSets", "FewCalibrationGroupsWarning",
           "IsotonicCalibration", "TemperatureScaling", "Uncertainty", "fit_uncertainty"]
