"""Landmark CSV files in the study's layout, with the coordinate system declared.

Layout written (one header comment, a header row, one row per point)::

    # coordinate_system = LPS
    name,X,Y,Z
    L01,12.500000,-80.100000,3.000000
    L02,,,

A point without a position keeps its row with empty coordinates, so the row order (the
study reads "the first 34 rows") and the names survive; it is never written as zeros.
Study files carry no declaration; reading them needs the coordinate system from the user.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np

from .atomic import write_text_atomic
from .geometry import CoordinateSystem, PointSet

_DECLARATION = re.compile(r"^#\s*coordinate_?system\s*[=:]\s*(\w+)", re.IGNORECASE)


def write_landmarks_csv(
    path: Path | str, points: PointSet, coordinate_system: CoordinateSystem = "LPS", overwrite: bool = False
) -> Path:
    """Write points in ``coordinate_system`` (converted from the PointSet's own system)."""
    converted = points.to(coordinate_system)
    buffer = io.StringIO()
    buffer.write(f"# coordinate_system = {coordinate_system}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["name", "X", "Y", "Z"])
    for name, position in zip(converted.names, converted.positions, strict=True):
        if np.all(np.isfinite(position)):
            writer.writerow([name, *(f"{value:.6f}" for value in position)])
        else:
            writer.writerow([name, "", "", ""])
    return write_text_atomic(path, buffer.getvalue(), overwrite=overwrite)


def declared_coordinate_system(path: Path | str) -> CoordinateSystem | None:
    """The system a file declares in a leading '# coordinate_system = ...' line, if any."""
    with open(path, newline="") as handle:
        for line in handle:
            if not line.startswith("#"):
                return None
            match = _DECLARATION.match(line.strip())
            if match:
                system = match.group(1).upper()
                if system not in ("LPS", "RAS"):
                    raise ValueError(f"{path} declares coordinate system {system!r}; only LPS and RAS are supported.")
                return system  # type: ignore[return-value]
    return None


def _coordinate(text: str, path: Path, row_number: int) -> float:
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{path}, row {row_number}: {text!r} is not a number.") from None
    if not math.isfinite(value):
        raise ValueError(f"{path}, row {row_number}: coordinate {text!r} is not finite.")
    return value


def read_landmarks_csv(path: Path | str, coordinate_system: CoordinateSystem | None = None) -> PointSet:
    """Read a landmark CSV (name, X, Y, Z) into a PointSet in the file's coordinate system.

    ``coordinate_system`` is required for files that do not declare one (study files), and
    must agree with the declaration when there is one. Empty coordinates become NaN rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Landmark file {path} does not exist.")
    declared = declared_coordinate_system(path)
    if declared is None and coordinate_system is None:
        raise ValueError(
            f"{path} does not declare its coordinate system; state it (LPS or RAS) when importing. "
            "Slicer's own files and ITK use LPS."
        )
    if declared is not None and coordinate_system is not None and declared != coordinate_system:
        raise ValueError(f"{path} declares {declared} coordinates, but {coordinate_system} was requested.")
    system = declared or coordinate_system
    names, positions = [], []
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(line for line in handle if not line.startswith("#")) if row]
    if not rows:
        raise ValueError(f"{path} is empty; expected a header row and one row per landmark.")
    header, body = rows[0], rows[1:]
    if len(header) < 4 or any(_is_number(cell) for cell in header[1:4]):
        raise ValueError(f"{path} must start with a header row such as 'name,X,Y,Z'; found {header!r}.")
    for row_number, row in enumerate(body, start=2):
        if len(row) < 4:
            raise ValueError(f"{path}, row {row_number}: expected name, X, Y, Z; found {row!r}.")
        names.append(row[0].strip())
        positions.append([_coordinate(cell, path, row_number) for cell in row[1:4]])
    return PointSet(names=tuple(names), positions=np.array(positions).reshape(-1, 3), coordinate_system=system)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
