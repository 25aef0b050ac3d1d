"""Triangle meshes: the PLY meshes of ``../shared/data/cad`` (and any PLY with a triangle ``face`` element).

A :class:`TriangleMesh` holds float64 vertices, int64 triangles and one 8-bit colour per face. :func:`read_mesh`
reads binary or ascii PLY through plyfile: ``element vertex`` with ``x, y, z`` (any numeric type) and optional
``red, green, blue``, and ``element face`` with one list property of vertex indices (``vertex_indices`` or
``vertex_index``), every list of length 3. A face's colour is the mean of its three vertex colours (rounded),
or 180, 180, 180 when the vertices have no colour (the CAD README's "no colour" value). Binary faces are read
memory-mapped with their list length fixed at 3 (plyfile's fast path: 23 ms for 50,000 faces here); a file
whose lists are not all triangles is refused rather than triangulated.

:func:`transform` places a mesh in a scene (scale in the mesh's own axes, yaw about z, translation) and
:func:`concatenate` merges meshes into one, with the index of the mesh each face came from.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from ..errors import BadInputError

__all__ = ["TriangleMesh", "read_mesh", "transform", "concatenate", "NO_COLOUR"]

NO_COLOUR = (180, 180, 180)
_FACE_LISTS = ("vertex_indices", "vertex_index")


@dataclass
class TriangleMesh:
    """``vertices`` float64 (V, 3), ``faces`` int64 (F, 3) indices into ``vertices``, ``face_rgb`` uint8 (F, 3)."""

    vertices: np.ndarray
    faces: np.ndarray
    face_rgb: np.ndarray

    def __post_init__(self):
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64).reshape(-1, 3)
        self.face_rgb = np.ascontiguousarray(self.face_rgb, dtype=np.uint8).reshape(-1, 3)
        if len(self.face_rgb) != len(self.faces):
            raise ValueError(f"face_rgb has {len(self.face_rgb)} rows for {len(self.faces)} faces")

    @property
    def triangles(self) -> np.ndarray:
        """(F, 3, 3) float64 corner coordinates."""
        return self.vertices[self.faces]

    def extent(self) -> np.ndarray:
        """(3,) size of the bounding box of the vertices the faces use."""
        used = self.vertices[np.unique(self.faces)] if len(self.faces) else self.vertices[:0]
        return used.max(axis=0) - used.min(axis=0) if len(used) else np.zeros(3)


def _face_list_name(head: bytes, path: str) -> str | None:
    """Name of the face element's vertex-index list property, from the header text; None when the file has no
    face element."""
    end = head.find(b"end_header")
    element, has_face, lists = None, False, []
    for line in head[:end if end >= 0 else len(head)].decode("ascii", errors="replace").splitlines():
        words = line.split()
        if words[:1] == ["element"]:
            element = words[1] if len(words) > 1 else None
            has_face |= element == "face"
        elif element == "face" and len(words) == 5 and words[:2] == ["property", "list"]:
            lists.append(words[4])
    if not has_face:
        return None
    for name in _FACE_LISTS:
        if name in lists:
            return name
    found = f" (found list properties: {', '.join(lists)})" if lists else ""
    raise BadInputError(f"PLY face element has no 'vertex_indices' list{found}; it is not a triangle mesh", path)


def read_mesh(path) -> TriangleMesh:
    """Read a PLY triangle mesh. Raises :class:`~pcseg.errors.BadInputError` (one line: what is wrong, what to do)
    for a missing or unreadable file, a file without faces (a point cloud: read it with ``pcseg.io.read``),
    faces that are not triangles, indices out of range and non-finite vertex coordinates."""
    from plyfile import PlyData, PlyElementParseError

    from .ply import _check_sizes  # imported here, like every reader: `import pcseg.io` stays light

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise BadInputError("no such file; check the path", path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if head[:3] != b"ply":
        raise BadInputError("not a PLY file (no 'ply' magic line); meshes are read from PLY only", path)
    end = head.find(b"end_header")
    if end < 0:
        raise BadInputError("PLY header has no 'end_header' line; the file is truncated or not a PLY", path)
    bad = re.search(rb"[^\x20-\x7e\t\r\n]", head[:end])
    if bad:
        raise BadInputError(f"PLY header has a non-text byte {bad.group()!r} at byte {bad.start()}; the file is "
                            "damaged", path)
    listname = _face_list_name(head, path)
    if listname is None:
        raise BadInputError("PLY file has no face element: it is a point cloud, not a mesh (read it with "
                            "pcseg.io.read, or give a triangle mesh)", path)
    start = end + len(b"end_header") + (2 if head[end + 10:end + 12] == b"\r\n" else 1)

    def newlines() -> int:
        with open(path, "rb") as f:
            f.seek(start)
            return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 24), b"")) + 1

    _check_sizes(head, size - start, newlines, path)
    try:
        ply = PlyData.read(path, known_list_len={"face": {listname: 3}})
        vertex, face = ply["vertex"].data, ply["face"].data
        names = vertex.dtype.names or ()
        missing = [c for c in "xyz" if c not in names]
        if missing:
            raise BadInputError(f"PLY vertices have no {', '.join(missing)} property; a mesh needs x, y, z", path)
        with np.errstate(invalid="ignore", over="ignore"):
            vertices = np.stack([np.asarray(vertex[c], dtype=np.float64) for c in "xyz"], axis=1)
        rgb = (np.stack([np.asarray(vertex[c]) for c in ("red", "green", "blue")], axis=1)
               if all(c in names for c in ("red", "green", "blue")) else None)
        lists = face[listname]
        if lists.dtype == object:  # ascii files (and binary ones plyfile could not map): ragged lists
            lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
            if np.any(lengths != 3):
                row = int(np.flatnonzero(lengths != 3)[0])
                raise BadInputError(f"face {row} has {lengths[row]} vertices: only triangle meshes are read; "
                                    "triangulate the mesh first", path)
            faces = np.array(lists.tolist(), dtype=np.int64).reshape(-1, 3)
        else:
            faces = np.asarray(lists, dtype=np.int64).reshape(-1, 3)
    except BadInputError:
        raise
    except PlyElementParseError as e:
        if "unexpected list length" in str(e):
            raise BadInputError(f"face {e.row} is not a triangle: only triangle meshes are read; triangulate the "
                                "mesh first", path) from None
        raise BadInputError(f"cannot read PLY data ({str(e).splitlines()[0]}); the file may be truncated or "
                            "corrupt", path) from None
    except KeyError as e:
        raise BadInputError(f"PLY file has no {e} element; a mesh needs vertex and face elements", path) from None
    except Exception as e:  # noqa: BLE001 - plyfile raises many types for malformed files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInputError(f"cannot read PLY data ({msg}); the file may be truncated or corrupt", path) from None
    if len(faces) == 0:
        raise BadInputError("PLY face element is empty: the file holds no triangles", path)
    if not np.isfinite(vertices).all():
        bad_rows = int((~np.isfinite(vertices).all(axis=1)).sum())
        raise BadInputError(f"{bad_rows:,} vertices have non-finite coordinates; the file is damaged", path)
    lo, hi = int(faces.min()), int(faces.max())
    if lo < 0 or hi >= len(vertices):
        raise BadInputError(f"face vertex indices run from {lo} to {hi} but there are {len(vertices):,} vertices; "
                            "the file is damaged", path)
    if rgb is None:
        face_rgb = np.tile(np.array(NO_COLOUR, dtype=np.uint8), (len(faces), 1))
    else:
        rgb = np.clip(rgb.astype(np.float64), 0, 255)  # uchar in the CAD files; other integer types clipped
        face_rgb = np.rint(rgb[faces].mean(axis=1)).astype(np.uint8)
    return TriangleMesh(vertices, faces, face_rgb)


def transform(mesh: TriangleMesh, rotation_z: float = 0.0, scale=1.0, translation=(0.0, 0.0, 0.0)) -> TriangleMesh:
    """A copy of ``mesh`` placed in a scene: ``v' = Rz(rotation_z) (scale * v) + translation``.

    ``scale`` is a number or three per-axis factors, applied in the mesh's own axes (before the yaw);
    ``rotation_z`` is the yaw in radians, counter-clockwise seen from +z, about the mesh's own origin (the CAD
    meshes are centred at x = y = 0 and rest on z = 0). Negative factors mirror the mesh; faces keep their
    vertex order (ray casting is two-sided, so the winding does not matter there)."""
    s = np.broadcast_to(np.asarray(scale, dtype=np.float64), (3,))
    c, n = np.cos(rotation_z), np.sin(rotation_z)
    rot = np.array([[c, -n, 0.0], [n, c, 0.0], [0.0, 0.0, 1.0]])
    vertices = (mesh.vertices * s) @ rot.T + np.asarray(translation, dtype=np.float64).reshape(3)
    return TriangleMesh(vertices, mesh.faces.copy(), mesh.face_rgb.copy())


def concatenate(meshes) -> tuple[TriangleMesh, np.ndarray]:
    """One mesh holding every face of ``meshes`` (in order), and ``face_owner`` int64 (F,): the index in
    ``meshes`` of the mesh each face came from."""
    meshes = list(meshes)
    if not meshes:
        return TriangleMesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8)), \
            np.zeros(0, np.int64)
    offsets = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    vertices = np.concatenate([m.vertices for m in meshes])
    faces = np.concatenate([m.faces + off for m, off in zip(meshes, offsets)])
    face_rgb = np.concatenate([m.face_rgb for m in meshes])
    owner = np.repeat(np.arange(len(meshes), dtype=np.int64), [len(m.faces) for m in meshes])
    return TriangleMesh(vertices, faces, face_rgb), owner
