"""What both methods share and that knows no gel and no B-scan, one job per module: files written atomically
(``atomic``), ignite handlers attached once (``events``), image files and their screening (``image_files``),
datalists (``datalist``), splits (``splits``), checks before training (``validation``), inference inputs that skip
and report bad files (``inputs``, ``skipped_inputs``), the prediction-writer base (``prediction_writer``), the
synthetic default with the generator handed in (``synthetic``), the recipe a checkpoint carries (``recipe``),
resumable training state (``training``), ONNX Runtime networks (``onnx``), the process a bundle runs in: rank,
device, CUDA switches, autocast dtype (``runtime``).

Nothing here imports :mod:`custom_components.ife` or :mod:`custom_components.oct`: a domain hands in what it needs
(class names, its generator, its file screeners, :class:`JSONRecord` for per-item records).
"""

from .atomic import read_json_file, save_atomic, write_csv_atomic, write_json_atomic, write_text_atomic
from .datalist import DATALIST_NAME, DatalistError, load_datalist, median_aspect, training_and_validation
from .events import attach_handlers, attach_once, every_n_iterations
from .image_files import (
    DICOM_EXTENSIONS,
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    PILConvert,
    printable_path,
    register_format_screener,
    screen_image_file,
)
from .inputs import FAILED_INPUTS, JSONRecord, SkippingDataset, collate_skipping_failures, list_images, scan_inputs
from .onnx import OnnxRuntimeNetwork
from .prediction_writer import PredictionWriter
from .recipe import (
    CheckedCheckpointLoader,
    CheckpointMismatchError,
    RecipeError,
    RecipeMismatchError,
    RecipeSaver,
    check_recipe,
    describe_mismatch,
    load_pretrained,
    mismatch_error,
    read_recipe,
    recipe_path,
    started_from,
    trained_settings,
    weights_sha256,
    write_recipe,
)
from .runtime import autocast_dtype, is_cuda, is_not_rank0, log_best_model, set_cudnn_benchmark, to_device
from .skipped_inputs import SkippedInputsReport, skip_failed_inputs
from .splits import stratified_group_kfold, stratified_group_split, stratified_kfold, stratified_split
from .synthetic import prepare_dataset
from .training import (
    AmpGradScaler,
    AtomicCheckpointSaver,
    GradientClipping,
    LossTermsHandler,
    RandomStates,
    TrainingStateSaver,
)
from .validation import check_datalist, mask_value_problem, validate_datalist
