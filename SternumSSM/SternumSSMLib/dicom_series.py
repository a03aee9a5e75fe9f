"""A DICOM CT series from a folder, through SimpleITK (GDCM).

GDCM groups a folder's files (not its subfolders) by series and sorts each series' files
along the slice normal; the image's LPS geometry comes from the slices' position and
orientation tags, and its values from the stored pixels through the rescale tags (HU).
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk


def series_uids(folder: Path | str) -> list[str]:
    """The DICOM series GDCM finds in ``folder``, by Series Instance UID; empty when there is none."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def series_files(folder: Path | str, series_uid: str | None = None) -> list[Path]:
    """The files of the folder's one DICOM series (or of ``series_uid``), in slice order.

    Refuses a folder without a series, a folder with several when none is chosen, and a
    series of a single slice.
    """
    uids = series_uids(folder)
    if not uids:
        raise ValueError(f"{folder} holds no DICOM series")
    if series_uid is None and len(uids) > 1:
        raise ValueError(
            f"{folder} holds {len(uids)} DICOM series ({', '.join(uids)}); put each series in its own folder"
        )
    if series_uid is not None and series_uid not in uids:
        raise ValueError(f"{folder} holds no DICOM series {series_uid}; its series are {', '.join(uids)}")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_uid or uids[0])
    if len(files) < 2:
        raise ValueError(f"the DICOM series in {folder} has a single slice; a CT needs more than one slice")
    return [Path(name) for name in files]


def read_series(files: list[Path]) -> sitk.Image:
    """One 3D image from the files of a series, in the order given (see :func:`series_files`)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(name) for name in files])
    return reader.Execute()
