"""Ignite handlers: IFE and OCT output writers (on one prediction-writer base), gradient clipping, loss-term logging,
resumable training state, inputs that fail during inference, post-training calibration of the IFE network."""

from .ife import IFEEvaluationReport, IFEPredictionWriter
from .ife_calibration import IFECalibrator, calibrate_checkpoint
from .oct import FluidPredictionWriter, SegmentationReport
from .prediction_writer import PredictionWriter
from .skipped_inputs import SkippedInputsReport, skip_failed_inputs
from .training import AtomicCheckpointSaver, GradientClipping, LossTermsHandler, RandomStates, TrainingStateSaver
