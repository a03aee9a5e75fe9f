"""A CT written as a DICOM series, one slice a file, carrying patient tags that must never reach a dataset."""

from __future__ import annotations

import locale

import SimpleITK as sitk
from SternumSSMLib.geometry import Volume

PATIENT_TAGS = {"0010|0010": "DOE^JANE", "0010|0020": "PID12345", "0008|0020": "19570312", "0010|0030": "19570312"}


def write_dicom_series(image: Volume, folder, series_uid: str = "1.2.826.0.1.3680043.2.1125.7") -> None:
    """One CT slice per file, with patient tags that must never reach the dataset.

    Pixels are stored as HU + 1024 with the rescale tags saying so, as scanners often do.
    """
    saved_locale = locale.setlocale(locale.LC_ALL)
    try:
        _write_dicom_slices(image, folder, series_uid)
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)  # GDCM's writer leaves the C locale (ASCII file reads) behind


def _write_dicom_slices(image: Volume, folder, series_uid: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    volume = image.to_sitk()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = volume.GetDirection()
    spacing = volume.GetSpacing()
    for index in range(volume.GetDepth()):
        slice_image = volume[:, :, index]
        tags = {
            **PATIENT_TAGS,
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.6",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{index + 1}",
            "0020|0013": str(index + 1),
            "0020|0037": "\\".join(str(v) for v in (*direction[0:7:3], *direction[1:8:3])),
            "0020|0032": "\\".join(str(v) for v in volume.TransformIndexToPhysicalPoint((0, 0, index))),
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
            "0018|0050": str(spacing[2]),
            "0028|1052": "-1024",
            "0028|1053": "1",
            "0028|1054": "HU",
        }
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{series_uid}-{index + 1:03d}.dcm"))
        writer.Execute(slice_image)
