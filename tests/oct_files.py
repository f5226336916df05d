# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Small OCT files in every vendor format the fluid bundle reads, written by the tests (never a patient's scan).

How each test file is made (none is a real patient's scan):

- DICOM OCT: pydicom, an Ophthalmic Tomography Image Storage object with shared pixel measures (PixelSpacing,
  SliceThickness, SpacingBetweenSlices), ImageLaterality and AcquisitionDateTime.
- Heidelberg VOL: eyepy's own construct definition of the format (``eyepy.io.he.vol_reader.vol_format``: 2048-byte
  header, SLO, B-scan headers and float32 B-scans), built with ``vol_format.build``. eyepy's ``HeVolWriter`` cannot
  be used: in 0.21 it passes ``datetime`` objects where its date adapters expect ISO text, and the 64-bit exam time
  adapter encodes a float; the exam time field is therefore built as the documented integer (100 ns ticks since
  1601-01-01), everything else by eyepy's definition.
- Heidelberg XML export: an XML file with the elements eyepy's ``HeXmlReader`` reads (its ``xml_format``), and the
  localizer and B-scan PNGs it names.
- Topcon FDA and FDS: the chunk layout oct-converter reads (``FOCT`` header, then name-length, name, size, data
  chunks; uocte's description of the Topcon format), each chunk built with oct-converter's own ``construct``
  structs (``fda_binary`` / ``fds_binary``): raw uint16 B-scans (``@IMG_MOT_COMP_03`` / ``@IMG_SCAN_03``),
  ``@PARAM_SCAN_04`` (scan size in mm, axial resolution), ``@CAPTURE_INFO_02`` (eye, date), ``@PATIENT_INFO_02``.
- Zeiss Cirrus IMG: a bare byte cube (the format has no header), two 1024 x 512 B-scans.
- Heidelberg E2E: not produced here (no writer in eyepy or oct-converter; the format is undocumented beyond the
  readers): supported through eyepy, not tested.

``tests/conftest.py`` puts this folder on ``sys.path``: ``import oct_files`` from any test module.
"""

from __future__ import annotations

import datetime
import struct

import numpy as np
from PIL import Image

from custom_components.oct.volumes import DICOM_OCT_SOP_CLASS

__all__ = ["write_dicom_oct", "write_heidelberg_vol", "write_heidelberg_xml", "write_topcon"]


def write_dicom_oct(
    path, frames: np.ndarray, spacing=(0.0039, 0.0117, 0.12), laterality="L", date="20220315", between=True,
    slice_thickness=None,
):  # fmt: skip
    """A DICOM Ophthalmic Tomography Image (multi-frame, uint8 or uint16) with shared pixel measures; frame ``k``
    positioned at ``k * spacing[2]`` mm. ``between=False`` leaves out SpacingBetweenSlices; ``slice_thickness``
    (default ``spacing[2]``) is the nominal B-scan thickness written."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DICOM_OCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = DICOM_OCT_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Manufacturer = "OPT", "Test Vendor"
    ds.PatientID, ds.PatientName = "PAT-DICOM-1", "Test^Patient"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    # type 2 attributes of the patient, study and series modules: present, empty where unknown
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName, ds.AccessionNumber = "", "", "", ""
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = date, "101112", "1", 1, 1
    ds.ImageLaterality = laterality
    ds.AcquisitionDateTime = date + "101112"
    ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1], frames.shape[2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = frames.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    measures = Dataset()
    measures.PixelSpacing = [spacing[0], spacing[1]]  # (between rows = axial, between columns = lateral)
    measures.SliceThickness = spacing[2] if slice_thickness is None else slice_thickness
    if between:
        measures.SpacingBetweenSlices = spacing[2]
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orientation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(frames.shape[0]):  # B-scan k at k inter-B-scan steps: the geometry a DICOM SEG references
        position = Dataset()
        position.ImagePositionPatient = [0.0, 0.0, k * spacing[2]]
        group = Dataset()
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.FrameOfReferenceUID = generate_uid()
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(str(path), write_like_original=False)
    return path


def write_heidelberg_vol(
    path, bscans: np.ndarray, ys=(3.0, 2.0, 1.0), laterality="OS", version="HSF-OCT-103", positions=None
):
    """A Heyex VOL file (eyepy's ``vol_format``) of uint8 B-scans stored as Heyex float reflectivity; ``ys`` are the
    B-scans' vertical positions on the localizer in mm (larger = lower on the fundus = inferior), each B-scan
    horizontal from x = 0.5 to 5.5 mm; ``positions``, when given, replaces them with each B-scan's
    ``(start_x, start_y, end_x, end_y)`` (a vertical or radial scan)."""
    import construct as cs
    from eyepy.core.utils import to_vol_intensity
    from eyepy.io.he.vol_reader import vol_format

    n, rows, columns = bscans.shape
    header_size = 256 + 17 * 4 * columns  # 256 bytes, then 17 layer vectors, as Heyex and eyepy's writer do
    if positions is None:
        positions = [(0.5, y, 5.5, y) for y in ys]
    records = [
        dict(bscan_hdr_size=header_size, start_x=x0, start_y=y0, end_x=x1, end_y=y1, num_seg=17, quality=30.0,
             shift=0, iv_transformation=[0] * 6, layer_segmentations=np.zeros((17, columns), np.float32),
             data=to_vol_intensity(bscans[i]))
        for i, (x0, y0, x1, y1) in enumerate(positions)
    ]  # fmt: skip
    exam = "exam_time" / cs.Int64ul  # 100 ns ticks since 1601-01-01 (eyepy's adapter cannot encode it)
    layout = cs.Struct(*[exam if sc.name == "exam_time" else sc for sc in vol_format.subcons])
    ticks = int((datetime.datetime(2021, 3, 4, 10, 11, 12) - datetime.datetime(1601, 1, 1)).total_seconds()) * 10**7
    raw = layout.build(
        dict(version=version, size_x=columns, n_bscans=n, size_y=rows, scale_x=0.0113, distance=0.12,
             scale_y=0.0039, size_x_slo=32, size_y_slo=32, scale_x_slo=0.2, scale_y_slo=0.2, field_size_slo=30,
             scan_focus=0.0, scan_position=laterality, exam_time=ticks, scan_pattern=3, bscan_hdr_size=header_size,
             id="42", reference_id="", pid=7, patient_id="PAT-123", dob="1950-01-01T00:00:00", vid=1,
             visit_id="V1", visit_date="2021-03-04T00:00:00", grid_type=0, grid_offset=0, grid_type1=0,
             grid_offset1=0, prog_id="", localizer=np.zeros((32, 32), np.uint8), bscans=records)
    )  # fmt: skip
    path.write_bytes(raw)
    return path


def write_heidelberg_xml(folder, bscans: np.ndarray, ys=(1.0, 2.0, 3.0), laterality="R"):
    """A Heyex XML export: the XML and the localizer and B-scan PNGs it names (``ExamURL``)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "loc.png")
    images = [
        "<Image><ImageType><Type>LOCALIZER</Type></ImageType><OphthalmicAcquisitionContext><Width>32</Width>"
        "<Height>32</Height><ScaleX>0.2</ScaleX><ScaleY>0.2</ScaleY><Angle>30</Angle><Focus>0.0</Focus>"
        "</OphthalmicAcquisitionContext><ImageData><ExamURL>C:\\export\\loc.png</ExamURL></ImageData></Image>"
    ]
    for i, (bscan, y) in enumerate(zip(bscans, ys)):
        Image.fromarray(bscan).save(folder / f"b{i}.png")
        images.append(
            f"<Image><ImageType><Type>OCT</Type></ImageType><OphthalmicAcquisitionContext><Width>{bscan.shape[1]}"
            f"</Width><Height>{bscan.shape[0]}</Height><ScaleX>0.0113</ScaleX><ScaleY>0.0039</ScaleY>"
            f"<Start><Coord><X>0.5</X><Y>{y}</Y></Coord></Start><End><Coord><X>5.5</X><Y>{y}</Y></Coord></End>"
            f"<ImageQuality>30</ImageQuality></OphthalmicAcquisitionContext>"
            f"<ImageData><ExamURL>C:\\export\\b{i}.png</ExamURL></ImageData></Image>"
        )
    date = "<Date><Year>2019</Year><Month>7</Month><Day>8</Day></Date>"
    xml = (
        "<?xml version='1.0' encoding='utf-8'?><HEDX><BODY><SWVersion><Version>6.0</Version></SWVersion>"
        f"<Patient><ID>5</ID><PatientID>PAT-XML</PatientID><Study><StudyDate>{date}</StudyDate><Series>"
        f"<ID>9</ID><Laterality>{laterality}</Laterality><ReferenceSeries><ID>9</ID><ExamDate>{date}</ExamDate>"
        f"</ReferenceSeries>{''.join(images)}</Series></Study></Patient></BODY></HEDX>"
    )
    path = folder / "scan.xml"
    path.write_text(xml, encoding="utf-8")
    return path


def write_topcon(path, kind: str, bscans: np.ndarray, size_mm=(6.0, 6.0), z_um=2.6, eye=1, date=(2020, 5, 6)):
    """A Topcon FDA or FDS file: the ``FOCT`` header and chunks built with oct-converter's own structs."""
    if kind == "fda":
        from oct_converter.readers.binary_structs import fda_binary as binary
    else:
        from oct_converter.readers.binary_structs import fds_binary as binary

    n, rows, columns = bscans.shape
    # B-scans as the readers reshape them: (columns, rows, B-scans) in Fortran order, uint16
    pixels = np.ascontiguousarray(np.transpose(bscans, (2, 1, 0)).astype(np.uint16)).tobytes(order="F")
    # FDA: @IMG_MOT_COMP_03 (``oct_header_2``), FDS: @IMG_SCAN_03 (``oct_header``): the same 22-byte header, then
    # the raw volume
    header = binary.oct_header_2 if kind == "fda" else binary.oct_header
    head = header.build(dict(scan_mode=2, width=columns, height=rows, bits_per_pixel=16, number_slices=n, format=0,
                             size=len(pixels)))  # fmt: skip
    oct_chunk = (b"@IMG_MOT_COMP_03" if kind == "fda" else b"@IMG_SCAN_03", head + pixels)
    params = binary.param_scan_04_header.build(
        dict(fixation=0, mirror_pos=0, polar=0, x_dimension_mm=size_mm[0], y_dimension_mm=size_mm[1],
             z_resolution_um=z_um, comp_eff_2=0.0, comp_eff_3=0.0, base_pos=0, used_calib_data=0)
    )  # fmt: skip
    capture = binary.capture_info_02_header.build(
        dict(eye=eye, scan_mode=2, session_id=1, label="3D Macula", cap_date=[*date, 10, 11, 12])
    )
    # patient id, then first, last and middle name (32 + 32 + 8 bytes, left empty), then sex (1: male; oct-converter
    # knows only 1-3), the rest zero
    patient = bytearray(binary.patient_info_02_header.sizeof())
    patient[:10], patient[104] = b"PAT-TOPCON", 1
    chunks = [oct_chunk, (b"@PARAM_SCAN_04", params), (b"@CAPTURE_INFO_02", capture)]
    chunks.append((b"@PATIENT_INFO_02", bytes(patient)))
    out = binary.header.build(dict(file_code="FOCT", file_type="FDA", major_ver=1, minor_ver=0))
    for name, data in chunks:
        out += struct.pack("<B", len(name)) + name + struct.pack("<I", len(data)) + data
    path.write_bytes(out + b"\x00")  # a zero-length name ends the chunk list
    return path


# ---------------------------------------------------------------------------------------------------------------
# the formats, read back
