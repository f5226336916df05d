"""OCT fluid segmentation with a 2D TransUNet (JMSS 2023) and what the bundle adds to it, one job per module:

- ``volumes``: every OCT input (vendor files through eyepy and oct-converter, DICOM, PNG/TIFF/NIfTI) as one
  volume with its spacing and where the spacing came from; the vendor formats' screening.
- ``transforms``: Pillow converters, volume axes, per-B-scan scaling, geometry crops, noise.
- ``inferer``: B-scans of any size and volumes at the geometry the network was trained at.
- ``fluid_types``: the classes a model segments (one "fluid" class, or IRF / SRF / PED) and their mask values.
- ``transunet``, ``losses``, ``metrics``: the network, Dice + focal Tversky + weighted BCE, the false fluid rate.
- ``etdrs``: fluid volume per ETDRS sector; ``fluid_report``: the report's table, CSV, change table and page.
- ``overlay``: fluid overlays; ``export``: NIfTI and DICOM SEG masks; ``handlers``: the writers.
- ``synthetic``: the synthetic B-scans of the default data set and the tests.
- ``bundle``: what the bundle's configs call (recipe defaults, inference inputs, the messages a run logs).
"""

from .bundle import (
    RECIPE_DEFAULTS,
    check_evaluation_masks,
    inference_datalist,
    log_evaluation_metrics,
    log_evaluation_start,
    log_inference_outputs,
    log_inference_start,
    log_training_data,
    training_fluid_classes,
)
from .etdrs import ETDRS_SECTORS, ProvenanceSource, en_face_thickness, fluid_volumes, sector_masks
from .fluid_types import BINARY_FLUID, FLUID_TYPE_NAMES, FLUID_TYPES, exclusive_masks, label_map
from .handlers import FluidPredictionWriter, SegmentationReport
from .inferer import BScanGeometry, BScanInferer
from .losses import FluidLossName, FluidSegLoss, FocalTverskyLoss, WeightedBCELoss, fluid_loss
from .metrics import FalseFluidScanRate, per_scan_output
from .overlay import overlay_image
from .synthetic import render_bscan, synthesize_oct_dataset
from .transforms import (
    BScanLayoutd,
    ExclusiveFluidMasksd,
    FluidClassChannelsd,
    ScaleIntensityPerBScand,
    SeededGaussianNoised,
    geometry_crops,
)
from .transunet import TransformerEncoderBlock, TransUNet
from .volumes import OCT_EXTENSIONS, LoadOCTVolumed, OCTMetadata, OCTVolume, read_oct_metadata, read_oct_volume
