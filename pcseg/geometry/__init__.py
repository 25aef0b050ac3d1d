"""Geometry on numpy arrays: grid subsampling, radius neighbours, sphere tiling."""
from .neighbors import nearest_neighbor, neighborhood_sizes, radius_neighbors
from .subsample import GridSubsample, grid_subsample, group_by_cell, majority_vote
from .cloud_ops import pulse_ids, subsample_cloud, thin_to_density, xy_density
from .tiling import (class_balanced_weights, covering_centers, edge_crop_centres, points_in_spheres, random_centers,
                     square_crop)

__all__ = [
    "GridSubsample", "grid_subsample", "group_by_cell", "majority_vote",
    "radius_neighbors", "nearest_neighbor", "neighborhood_sizes",
    "covering_centers", "class_balanced_weights", "random_centers", "points_in_spheres", "subsample_cloud",
    "xy_density", "pulse_ids", "thin_to_density", "edge_crop_centres", "square_crop",
]
