"""Data: datalist reading, checking and splitting, the embedded synthetic default, inference input scanning."""

from .datalist import (
    DatalistError,
    load_datalist,
    prepare_dataset,
    scan_inputs,
    stratified_kfold,
    stratified_split,
    validate_classification_entries,
    validate_segmentation_entries,
)
