"""Data, one job per module: image files (``image_files``), datalists (``datalist``), entry checks before training
(``validation``), splits (``splits``), inference inputs (``inputs``), OCT vendor, DICOM and image files as one volume
(``oct_volumes``), the synthetic default (``synthetic``)."""

from .datalist import DATALIST_NAME, DatalistError, load_datalist, median_aspect, training_and_validation
from .inputs import FAILED_INPUTS, SkippingDataset, collate_skipping_failures, list_images, scan_inputs
from .image_files import OCT_EXTENSIONS
from .oct_volumes import LoadOCTVolumed, OCTMetadata, OCTVolume, read_oct_metadata, read_oct_volume
from .splits import stratified_group_kfold, stratified_group_split, stratified_kfold, stratified_split
from .synthetic.prepare import prepare_dataset
from .validation import check_datalist, mask_value_problem, validate_datalist
