"""The IFE multi-task method (MICCAI 2023) and what the bundle adds to it, one job per module:

- ``classes``: the label algebra (nine classes <-> severe/mild, fusion, the call rule); imports no MONAI.
- ``lanes``: the lane layout of a gel (find the six lanes, orientation, band patterns) and its normalisation.
- ``transforms``: the IFE call from fused probabilities.
- ``horizontal_attention``, ``networks``: the row attention, the multi-task and baseline ResNet18s.
- ``losses``: the multi-task objective with its attention regularisers (Eqs. 2-4).
- ``metrics``: the paper's classification metrics (accuracy, macro F1, FNR, M1/M3-Acc, per-class recall).
- ``attention``: attention maps' rows mapped between network and image, and where they peak against the bands.
- ``calibration``: temperature scaling, its record beside a checkpoint, its fit after training.
- ``referral``: refer-to-expert decisions and the operating point.
- ``ensemble``: fold ensembles of calibrated probabilities.
- ``figures``, ``handlers``: attention profiles, confusion matrices, reliability diagrams; the writers.
- ``synthetic``: the synthetic gels of the default data set and the tests.
- ``bundle``: what the bundle's configs call (recipe defaults, inference inputs, the messages a run logs).
"""

from .bundle import (
    GEOMETRY_KEYS,
    RECIPE_DEFAULTS,
    calibration_datalist,
    inference_datalist,
    log_calibration_file,
    log_calibration_start,
    log_ensemble_start,
    log_evaluation_start,
    log_inference_start,
    log_training_data,
    onnx_runtime_network,
    training_minority_classes,
    validate_ife_datalist,
)
from .calibration import IFECalibrator, calibrate_checkpoint
from .classes import IFE_CLASSES, MILD_CLASSES, SEVERE_CLASSES, call_from_probabilities, class_to_subtasks
from .ensemble import ProbabilityEnsemble, load_fold_ensemble
from .handlers import IFEEvaluationReport, IFEPredictionWriter
from .horizontal_attention import HorizontalAttention, UniformAttention
from .lanes import IFEBandPatternd, LaneLayout, LaneLayoutError, NormaliseLaneLayoutd, find_lanes
from .losses import IFEBaselineLoss, InnerTaskRegularizer, InterTaskRegularizer, MultiTaskIFELoss
from .metrics import IFEClassificationMetric, IFEMetricName, compute_ife_metrics
from .networks import ForwardHeads, IFEBasicBlock, IFEResNet, IFEResStage, MultiTaskIFEResNet
from .referral import choose_operating_point, refer_decisions
from .synthetic import render_gel, synthesize_ife_dataset
from .transforms import IFECalld
