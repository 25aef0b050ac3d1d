"""Point clouds in and out: one in-memory type, lossless readers/writers for LAS/LAZ, PLY, KITTI .bin, .npy,
text, PCD and S3DIS room folders; triangle meshes (PLY) in."""
from .api import FORMATS, WRITABLE, format_from_path, read, same_file, sniff, write
from .cloud import PointCloud
from .mesh import TriangleMesh, concatenate, read_mesh, transform

__all__ = ["FORMATS", "WRITABLE", "PointCloud", "format_from_path", "read", "same_file", "sniff", "write",
           "TriangleMesh", "read_mesh", "transform", "concatenate"]
