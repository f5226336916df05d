# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Fluid masks as files other programs read: a NIfTI image with the input's geometry (:func:`mask_nifti`) and, for
a DICOM input, a DICOM Segmentation referencing it (:func:`fluid_dicom_seg`, highdicom). The writers
(:mod:`custom_components.oct.handlers`) decide what to write; this module only encodes.

A binary mask is stored as 0/1; fluid types as one label map with RETOUCH's values (1 IRF, 2 SRF, 3 PED,
:mod:`custom_components.oct.fluid_types`): the NIfTI holds the label map itself, the SEG one segment per type."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from monai.data import MetaTensor
from monai.utils import convert_to_numpy

from custom_components.core.image_files import is_nifti
from custom_components.oct.fluid_types import BINARY_FLUID, FLUID_TYPE_NAMES, check_fluid_classes
from custom_components.oct.transforms import stored_bscan_axes

__all__ = ["FLUID_TYPE_CODES", "fluid_dicom_seg", "is_dicom_source", "mask_nifti"]

#: the SNOMED CT concept (code, meaning) each fluid type's SEG segment is coded with (its segmented property type; the
#: category is "morphologically abnormal structure" and the anatomic region the retina, as for the binary segment).
#: DICOM's own tables (PS3.16, as pydicom 2.4 ships them; the OCT CIDs 4209, 4211, 4270-4275) code no fluid type, so
#: each code was taken from the SNOMED CT US edition 2023-09 expansions of NLM VSAC value sets (the eCQM value sets
#: of cqframework/ecqm-content-qicore-2025, input/vocabulary/valueset/external/), meanings as they give them.
#: No SNOMED CT concept "intraretinal fluid" or "subretinal fluid" could be confirmed there (a "subretinal fluid"
#: 421843005 appears only in third-party code), so two are the nearest confirmed concepts:
FLUID_TYPE_CODES: dict[str, tuple[str, str]] = {
    # nearest: fluid within the macular retina; VSAC 2.16.840.1.113883.3.526.3.1320 "Macular Edema Findings Present"
    "IRF": ("37231002", "Macular retinal edema"),
    # nearest: SRF is fluid between the neurosensory retina and the RPE, i.e. a serous detachment of the retina;
    # VSAC 2.16.840.1.113883.3.526.3.1482 "Separation of Retinal Layers" (which also holds 247165009 "Retinal
    # detachment - subretinal fluid": the sources define it by its name only, so the established concept is used)
    "SRF": ("38599001", "Serous retinal detachment"),
    # the concept itself, at the macula an OCT cube images; VSAC 2.16.840.1.113883.3.526.3.1453 "Degeneration of
    # Macula and Posterior Pole"
    "PED": ("247158001", "Macular pigment epithelial detachment"),
}


def fluid_dicom_seg(
    mask: np.ndarray, source: str, software_version: str = "1", fluid_classes: Sequence[str] = BINARY_FLUID
) -> Any:
    """A DICOM Segmentation (highdicom) of the fluid, referencing the source DICOM OCT it was segmented from.

    One binary segment per class, one frame per B-scan and segment: frame ``k`` of a segment is B-scan ``k`` of the
    mask, which is frame ``k`` of the multi-frame source (the DICOM reader's B-scan order). The one binary class is
    segment 1, "fluid" (SNOMED CT morphologically abnormal structure / edema, in the retina); the fluid types are
    segments 1 IRF, 2 SRF, 3 PED (the label map's values), each coded with its :data:`FLUID_TYPE_CODES` concept.
    highdicom copies the patient, study and frame-of-reference attributes from the source and writes the references
    to it, so a PACS viewer shows the SEG over the scan it came from.

    Args:
        mask: ``(rows, columns, B-scans)`` in the source's rows and columns: the fluid mask (non-zero = fluid) for
            the binary class, the label map (value ``k + 1`` = class ``k``) for the fluid types.
        source: path of the source DICOM file (an Ophthalmic Tomography Image or another multi-frame image).
        software_version: written as the SEG's software version.
        fluid_classes: ``("fluid",)`` or ``("IRF", "SRF", "PED")``
            (:func:`~custom_components.oct.fluid_types.check_fluid_classes`).

    Returns:
        a ``highdicom.seg.Segmentation`` (a pydicom ``Dataset``; ``.save_as(path)`` writes it).

    Raises:
        ImportError: when highdicom is not installed.
        ValueError: when the mask does not match the source's frames, rows and columns, or a multi-frame source
            lacks the geometry the SEG needs (frame of reference, plane orientation and positions), naming the file;
            on other ``fluid_classes``.
    """
    import highdicom as hd  # optional: only DICOM inputs need it
    import pydicom
    from pydicom.dataset import Dataset

    fluid_classes = check_fluid_classes(fluid_classes)
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
    descriptions = [_segment_description(k + 1, c, software_version) for k, c in enumerate(fluid_classes)]
    if fluid_classes == BINARY_FLUID:
        pixels = np.ascontiguousarray(np.moveaxis(np.asarray(mask) > 0, 2, 0)).astype(np.uint8)  # (frames, rows, cols)
        pixels = pixels if frames > 1 else pixels[0]
    else:
        # one 0/1 plane per segment, (frames, rows, cols, segments): highdicom would read a label map holding only
        # 0 and 1 (IRF alone) as a single binary segment, this form is never ambiguous
        labels = np.moveaxis(np.asarray(mask), 2, 0)
        pixels = np.stack([labels == k + 1 for k in range(len(fluid_classes))], axis=-1).astype(np.uint8)
    return hd.seg.Segmentation(
        source_images=[dataset],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
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


def _segment_description(number: int, fluid_class: str, software_version: str) -> Any:
    """The SEG segment ``number`` of one fluid class: label, coded property (the binary class: edema; a fluid type:
    its :data:`FLUID_TYPE_CODES` concept), the algorithm that found it and the retina as anatomic region."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if fluid_class in FLUID_TYPE_CODES:
        code, meaning = FLUID_TYPE_CODES[fluid_class]
        property_type = hd.sr.CodedConcept(value=code, scheme_designator="SCT", meaning=meaning)
        label = f"{FLUID_TYPE_NAMES[fluid_class]} ({fluid_class})"  # "intraretinal fluid (IRF)", as viewers list it
    else:  # the binary class: any fluid, coded and labelled as it always was
        property_type, label = codes.SCT.Edema, fluid_class
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="oct_fluid_seg", version=software_version, family=codes.cid7162.ArtificialIntelligence
        ),
        anatomic_regions=[codes.SCT.Retina],
    )


def is_dicom_source(source: str, metadata: Mapping[str, Any]) -> bool:
    """Whether an input is DICOM: by the reader's format (``"dicom_oct"``, ``"dicom"``) or its file name."""
    if str(metadata.get("format", "")).lower().startswith("dicom"):  # the reader's "dicom_oct" and "dicom"
        return True
    return source.lower().endswith((".dcm", ".dicom"))


def mask_nifti(mask: np.ndarray, image: Any, source: str, spacing_mm: Sequence[float | None] | None = None):
    """The (rows, columns[, B-scans]) mask as a NIfTI image, stored as uint8: a binary mask as {0, 1}, a label map of
    fluid types with its values (0 background, 1 IRF, 2 SRF, 3 PED), so that it reads back as a training label.

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
