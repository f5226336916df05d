# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Fluid masks as files other programs read: a NIfTI image with the input's geometry (:func:`mask_nifti`) and, for
a DICOM input, a DICOM Segmentation referencing it (:func:`fluid_dicom_seg`, highdicom). The writers
(:mod:`custom_components.oct.handlers`) decide what to write; this module only encodes."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.data import MetaTensor
from monai.utils import convert_to_numpy

from custom_components.core.image_files import is_nifti
from custom_components.oct.transforms import stored_bscan_axes

__all__ = ["fluid_dicom_seg", "is_dicom_source", "mask_nifti"]


def fluid_dicom_seg(mask: np.ndarray, source: str, software_version: str = "1") -> Any:
    """A DICOM Segmentation (highdicom) of the fluid, referencing the source DICOM OCT it was segmented from.

    One binary segment ("fluid": SNOMED CT morphologically abnormal structure / edema, in the retina), one frame per
    B-scan: frame ``k`` of the SEG is B-scan ``k`` of the mask, which is frame ``k`` of the multi-frame source (the
    DICOM reader's B-scan order). highdicom copies the patient, study and frame-of-reference attributes from the
    source and writes the references to it, so a PACS viewer shows the SEG over the scan it came from.

    Args:
        mask: ``(rows, columns, B-scans)`` fluid mask (non-zero = fluid), in the source's rows and columns.
        source: path of the source DICOM file (an Ophthalmic Tomography Image or another multi-frame image).
        software_version: written as the SEG's software version.

    Returns:
        a ``highdicom.seg.Segmentation`` (a pydicom ``Dataset``; ``.save_as(path)`` writes it).

    Raises:
        ImportError: when highdicom is not installed.
        ValueError: when the mask does not match the source's frames, rows and columns, or a multi-frame source
            lacks the geometry the SEG needs (frame of reference, plane orientation and positions), naming the file.
    """
    import highdicom as hd  # optional: only DICOM inputs need it
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    dataset = pydicom.dcmread(source)
    frames = int(getattr(dataset, "NumberOfFrames", 1))
    expected = (int(dataset.Rows), int(dataset.Columns), frames)
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"{source}: the fluid mask (rows, columns, B-scans) {tuple(mask.shape)} does not match the DICOM's "
            f"{expected} (Rows, Columns, NumberOfFrames)."
        )
    if frames > 1:
        # highdicom 0.22 places the frames of a multi-frame SEG in the source's patient space: it needs the frame of
        # reference, the shared plane orientation and every frame's position (without a frame of reference it
        # takes single-frame sources only)
        shared = (dataset.get("SharedFunctionalGroupsSequence") or [Dataset()])[0]
        per_frame = dataset.get("PerFrameFunctionalGroupsSequence") or []
        missing = [
            name
            for name, present in (
                ("FrameOfReferenceUID", "FrameOfReferenceUID" in dataset),
                ("a shared PlaneOrientationSequence", "PlaneOrientationSequence" in shared),
                ("a PlanePositionSequence per frame", len(per_frame) == frames
                 and all("PlanePositionSequence" in f for f in per_frame)),
            )
            if not present
        ]  # fmt: skip
        if missing:
            raise ValueError(
                f"{source}: a DICOM SEG of its {frames} B-scans needs the source's patient-space geometry, and it "
                f"lacks {', '.join(missing)}."
            )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="fluid",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Edema,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="oct_fluid_seg", version=software_version, family=codes.cid7162.ArtificialIntelligence
        ),
        anatomic_regions=[codes.SCT.Retina],
    )
    pixels = np.ascontiguousarray(np.moveaxis(np.asarray(mask) > 0, 2, 0)).astype(np.uint8)  # (frames, rows, cols)
    return hd.seg.Segmentation(
        source_images=[dataset],
        pixel_array=pixels if frames > 1 else pixels[0],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=int(getattr(dataset, "SeriesNumber", 0) or 0) + 100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="oct_fluid_seg MONAI bundle",
        manufacturer_model_name="TransUNet fluid segmentation",
        software_versions=software_version,
        device_serial_number="none",
        series_description="OCT fluid (research use only)",
        omit_empty_frames=False,  # one frame per B-scan, so frame k stays B-scan k
    )


def is_dicom_source(source: str, metadata: Mapping[str, Any]) -> bool:
    """Whether an input is DICOM: by the reader's format (``"dicom_oct"``, ``"dicom"``) or its file name."""
    if str(metadata.get("format", "")).lower().startswith("dicom"):  # the reader's "dicom_oct" and "dicom"
        return True
    return source.lower().endswith((".dcm", ".dicom"))


def mask_nifti(mask: np.ndarray, image: Any, source: str, spacing_mm: Sequence[float | None] | None = None):
    """The (rows, columns[, B-scans]) mask as a NIfTI image, stored as uint8 {0, 1}.

    A NIfTI input's mask is in the source file's own axis order, with its affine and header (units, qform/sform
    codes, descriptions). Any other volume (DICOM, vendor formats) gets a (rows, columns, B-scans) NIfTI whose voxel
    sizes are the reader's spacing (``spacing_mm``, axial, lateral, inter-B-scan, in mm), so a viewer measures true
    distances; with any spacing unknown its qform and sform codes are 0, the NIfTI way of saying the header has no
    spatial information (1 mm voxels are then only a placeholder).
    """
    import nibabel as nib

    stored = (np.transpose(mask, np.argsort(stored_bscan_axes(image))) if mask.ndim == 3 else mask).astype(np.uint8)
    if is_nifti(source) and os.path.isfile(source):
        original = nib.load(source)  # the header only; the voxels are not read
        header = original.header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1.0, 0.0)
        stored = stored.reshape(stored.shape + (1,) * (len(original.shape) - stored.ndim))  # trailing 1s kept
        return type(original)(stored, original.affine, header)
    if is_nifti(source) or spacing_mm is None:
        affine = convert_to_numpy(image.affine) if isinstance(image, MetaTensor) else np.eye(4)
        return nib.Nifti1Image(stored, affine)
    if None in tuple(spacing_mm):
        nifti = nib.Nifti1Image(stored, None)  # no affine: qform and sform codes 0, spacing unknown
        return nifti
    nifti = nib.Nifti1Image(stored, np.diag([float(s) for s in spacing_mm] + [1.0]))
    nifti.header.set_xyzt_units("mm")
    return nifti
