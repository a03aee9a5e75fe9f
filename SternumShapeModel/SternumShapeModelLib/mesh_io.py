"""Mesh files: meshio formats (by extension) and LS-DYNA keyword files with the template's ids.

Coordinates in every file are LPS millimetres. LS-DYNA files say so in a comment; formats
without metadata (STL, OBJ, ...) carry no statement, so keep them beside the model's report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from SternumSSMLib.atomic import atomic_output_path

from .meshes import SurfaceMesh

KEYWORD_SUFFIXES = (".k", ".key", ".dyn")
_PART_ID = 1


def write_mesh(mesh: SurfaceMesh, path: Path | str, overwrite: bool = False, title: str = "sternum shape") -> Path:
    """Write ``mesh`` atomically: LS-DYNA keyword for .k/.key/.dyn, otherwise meshio by extension."""
    import meshio  # on use: Slicer installs it on first use

    path = Path(path)
    with atomic_output_path(path, overwrite=overwrite) as temporary:
        if path.suffix.lower() in KEYWORD_SUFFIXES:
            temporary.write_text(keyword_text(mesh, title))
        else:
            file_format = meshio.extension_to_filetypes.get(_meshio_suffix(path), [None])[0]
            if file_format is None:
                raise ValueError(
                    f"{path.name}: unknown mesh format; use .k (LS-DYNA) or one meshio writes (.vtk, .stl, ...)."
                )
            meshio.write(
                temporary,
                meshio.Mesh(
                    mesh.points_lps,
                    [("triangle", mesh.triangles)],
                    point_data={"node_id": mesh.node_ids.astype(np.int32)},
                ),
                file_format=file_format,
                # binary STL, as FE pre-processors expect; meshio's reader also mistakes an ASCII one for
                # binary first (the overflow warning it prints)
                **({"binary": True} if file_format == "stl" else {}),
            )
    return path


def read_mesh(path: Path | str) -> SurfaceMesh:
    """A triangle mesh from an LS-DYNA keyword file (ids kept) or any file meshio reads (LPS assumed)."""
    import meshio  # on use: Slicer installs it on first use

    path = Path(path)
    if path.suffix.lower() in KEYWORD_SUFFIXES:
        return read_keyword(path)
    data = meshio.read(path)
    triangles = [block.data for block in data.cells if block.type == "triangle"]
    others = sorted({block.type for block in data.cells} - {"triangle", "vertex", "line"})
    if not triangles or others:
        raise ValueError(f"{path}: a template must be a triangle surface; it holds {others or 'no triangles'}.")
    node_ids = data.point_data.get("node_id")
    return SurfaceMesh(np.asarray(data.points, float), np.concatenate(triangles), node_ids=node_ids)


def _meshio_suffix(path: Path) -> str:
    return ".vtk" if path.suffix.lower() == ".vtk" else path.suffix.lower()


def keyword_text(mesh: SurfaceMesh, title: str) -> str:
    """LS-DYNA keyword text: *NODE (I8, 3E16) and *ELEMENT_SHELL (I8 x 6, N3 repeated for a triangle)."""
    lines = ["*KEYWORD", "*TITLE", title[:80], "$ coordinates: LPS, millimetres (written by sternum-ssm)", "*NODE"]
    lines += [
        f"{nid:8d}{_e16(x)}{_e16(y)}{_e16(z)}" for nid, (x, y, z) in zip(mesh.node_ids, mesh.points_lps, strict=True)
    ]
    lines.append("*ELEMENT_SHELL")
    node_ids = mesh.node_ids[mesh.triangles]
    lines += [
        f"{eid:8d}{_PART_ID:8d}{a:8d}{b:8d}{c:8d}{c:8d}"
        for eid, (a, b, c) in zip(mesh.element_ids, node_ids, strict=True)
    ]
    lines.append("*END")
    return "\n".join(lines) + "\n"


def _e16(value: float) -> str:
    """A 16-character real with 9 significant digits (1e-6 mm near the origin) and always a decimal point."""
    text = f"{value:.9g}"
    if "." not in text and "e" not in text:
        text += "."
    return text.rjust(16)


def read_keyword(path: Path | str) -> SurfaceMesh:
    """Nodes and triangular shells (N4 = N3, or N4 empty/0) of an LS-DYNA keyword file; ids kept."""
    nodes: dict[int, tuple[float, float, float]] = {}
    elements: list[tuple[int, int, int, int]] = []
    section = None
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("$"):
            continue
        if line.startswith("*"):
            section = line.strip().upper()
            continue
        try:
            if section == "*NODE":
                nodes[int(line[0:8])] = (float(line[8:24]), float(line[24:40]), float(line[40:56]))
            elif section == "*ELEMENT_SHELL":
                fields = [int(line[k : k + 8]) if line[k : k + 8].strip() else 0 for k in range(0, 48, 8)]
                eid, _, a, b, c, d = fields
                if d not in (0, c):
                    raise ValueError(f"{path}, line {number}: element {eid} is a quad; the template must be triangles.")
                elements.append((eid, a, b, c))
        except (ValueError, IndexError) as error:
            raise ValueError(f"{path}, line {number}: not a fixed-width {section} card ({error}).") from error
    if not nodes or not elements:
        raise ValueError(f"{path} has no *NODE or no *ELEMENT_SHELL cards.")
    node_ids = np.array(sorted(nodes))
    index = {nid: n for n, nid in enumerate(node_ids)}
    try:
        triangles = np.array([[index[a], index[b], index[c]] for _, a, b, c in elements])
    except KeyError as error:
        raise ValueError(f"{path}: an element uses node {error.args[0]}, which has no *NODE card.") from error
    return SurfaceMesh(
        np.array([nodes[nid] for nid in node_ids]),
        triangles,
        node_ids=node_ids,
        element_ids=np.array([e[0] for e in elements]),
    )
