"""Ignite handlers: IFE and OCT output writers, gradient clipping, loss-term logging, resumable training state."""

from .ife import IFEEvaluationReport, IFEPredictionWriter
from .oct import FluidPredictionWriter, SegmentationReport
from .training import GradientClipping, LossTermsHandler, TrainingStateSaver
