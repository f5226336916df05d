"""Data, one job per module: image files (``image_files``), datalists (``datalist``), entry checks before training
(``validation``), splits (``splits``), inference inputs (``inputs``), the synthetic default (``synthetic``)."""

from .datalist import DATALIST_NAME, DatalistError, load_datalist, median_aspect, training_and_validation
from .inputs import FAILED_INPUTS, SkippingDataset, collate_skipping_failures, list_images, scan_inputs
from .splits import stratified_kfold, stratified_split
from .synthetic.prepare import prepare_dataset
from .validation import check_datalist, mask_value_problem, validate_datalist
