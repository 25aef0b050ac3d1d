"""Training input: preprocessed clouds, random training spheres, point-budget batches, neighbour-limit calibration.

Pipeline (KPConv §4.2 and supp. A):

1. :func:`prepare_clouds` grid-subsamples each cloud at ``dl0`` (barycentres, averaged features, majority
   labels; :func:`pcseg.geometry.grid_subsample`) and builds its KD-tree. Both are cached on disk
   (:mod:`pcseg.data.cache`): the entry is named by the source (path, label field, class map, channels) and
   ``dl0``, and validated against the size and modification time of every source file, so editing or
   replacing a file recomputes it.
2. :class:`SphereSampler` draws training spheres of radius ``50 * dl0`` (KPConv §4.2: "the input sphere radius
   is chosen as 50 x dl0") centred on a random point, uniformly over all points or, with
   ``balance_classes=True``, by first drawing a class uniformly among the classes present and then a point of
   that class (rare classes are seen as often as common ones). Sphere points are centred on the sphere centre
   and augmented (:mod:`pcseg.data.augment`).
3. Batches are filled up to a point budget, not a fixed number of spheres (KPConv supp. A: "a variable batch
   size by selecting as many elements as possible until a certain number of total of batch points is
   reached"): spheres are added while the total stays within ``point_budget``; the sphere that would overflow
   is dropped. A single sphere larger than the budget keeps its ``point_budget`` points nearest to the centre,
   so no batch ever exceeds the budget. :func:`suggest_point_budget` picks a budget for a target number of
   spheres per batch, as KPConv chooses its limit so that the average batch size matches the target one.
4. :func:`calibrate_neighbor_limits` sets each layer's neighbour cap to the ``quantile`` (0.8) of the
   neighbourhood sizes met in real sample spheres, so that 80% of neighbourhoods are kept whole (the
   calibration idea of KPConv-PyTorch; KPConv §3.3 sizes the neighbour matrix by the biggest neighbourhood,
   which a few dense spots make wide). :func:`calibrated_spec` caches the result (never a fallback). Calibration never
   stops a run: on any failure or when a layer has too few points to measure, it logs a warning and uses
   :func:`fallback_neighbor_limit`, the number of cells of size ``dl_l`` that fit in the ball of radius
   ``r_l`` (a grid-subsampled cloud cannot hold many more points there).

Everything is deterministic for a seed: :meth:`SphereSampler.batches` draws from ``np.random.default_rng(seed)``.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.spatial import cKDTree

from ..errors import BadInputError, UsageError
from ..geometry import grid_subsample, neighborhood_sizes, radius_neighbors, thin_to_density
from .augment import Augmentation
from .batch import PyramidSpec, StackedBatch, build_batch
from .cache import DiskCache, stable_hash
from .classmaps import IGNORE
from .datasets import CloudSource, LabelledCloud
from .features import channel_slices

log = logging.getLogger(__name__)

SPHERE_RADIUS_FACTOR = 50.0
"""Training sphere radius in units of ``dl0`` (KPConv §4.2)."""
DEFAULT_QUANTILE = 0.8
"""Share of neighbourhoods a calibrated cap keeps whole."""
MIN_CALIBRATION_POINTS = 32
"""A layer whose sample spheres hold fewer points than this is not measured (fallback cap)."""


@dataclass
class PreparedCloud:
    """A cloud subsampled at ``dl`` with its KD-tree (see step 1 of the module docstring).

    points: (M, 3) float64 cell barycentres in the source frame; features: (M, F) float32 cell means;
    labels: (M,) int64 majority training id per cell (-1 when most of the cell is ignored).
    cache_key: (identity, fingerprint) of the cache entry, None for clouds given in memory.
    """

    points: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    tree: cKDTree
    source: str
    channels: tuple[str, ...]
    dl: float
    cache_key: tuple | None = None

    def __len__(self) -> int:
        return len(self.points)


def subsample_cloud(cloud: LabelledCloud, dl: float) -> PreparedCloud:
    """Grid subsampling of a loaded cloud and its KD-tree (no cache)."""
    sub = grid_subsample(cloud.xyz, dl, features=cloud.features, labels=cloud.labels)
    return PreparedCloud(sub.points, sub.features.astype(np.float32), sub.labels.astype(np.int64),
                         cKDTree(sub.points), cloud.source, tuple(cloud.channels), float(dl))


def prepare_cloud(source: CloudSource | LabelledCloud, dl: float, cache: DiskCache | None = None) -> PreparedCloud:
    """Subsampled cloud and tree of one source, from the cache when its files have not changed."""
    if isinstance(source, LabelledCloud):
        return subsample_cloud(source, dl)
    hit = _cached(source, dl, cache)
    if hit is not None:
        return hit
    identity, fingerprint = _cache_key(source, dl)
    prepared = subsample_cloud(source.load(), dl)
    prepared.cache_key = (identity, fingerprint)
    if cache is not None:
        cache.save("clouds", identity, fingerprint,
                   {"points": prepared.points, "features": prepared.features, "labels": prepared.labels},
                   obj=prepared.tree, extra={"source": source.path, "points": len(prepared)})
    return prepared


def prepare_clouds(sources: Sequence[CloudSource | LabelledCloud], dl: float,
                   cache: DiskCache | None = None, workers: int = 0) -> list[PreparedCloud]:
    """:func:`prepare_cloud` for each source; with ``workers``, the sources missing from the cache are read in
    that many forked processes (the first of them here, so that what sources share, such as the object bank
    of synthetic:bank-rooms, is built once and inherited). 128 bank rooms took ~2 min in one process."""
    if workers <= 1 or len(sources) < 3:
        return [prepare_cloud(s, dl, cache) for s in sources]
    out: list[PreparedCloud | None] = [None] * len(sources)
    missing = []
    for i, s in enumerate(sources):
        hit = _cached(s, dl, cache)
        if hit is not None:
            out[i] = hit
        else:
            missing.append(i)
    if missing:
        out[missing[0]] = prepare_cloud(sources[missing[0]], dl, cache)
    rest = missing[1:]
    if rest:
        import multiprocessing

        global _POOL_JOB
        _POOL_JOB = (sources, dl, cache)
        try:
            with multiprocessing.get_context("fork").Pool(min(workers, len(rest))) as pool:
                for i, prepared in zip(rest, pool.imap(_prepare_one, rest)):
                    out[i] = prepared
        finally:
            _POOL_JOB = None
    return out


_POOL_JOB = None


def _prepare_one(i: int) -> PreparedCloud:
    sources, dl, cache = _POOL_JOB
    return prepare_cloud(sources[i], dl, cache)


def _cache_key(source: CloudSource, dl: float) -> tuple[dict, object]:
    """(identity, fingerprint) of a source's subsampled cloud in the cache."""
    return {"step": "grid_subsample", "dl": float(dl), "source": source.identity()}, source.fingerprint()


def _cached(source, dl: float, cache: DiskCache | None) -> PreparedCloud | None:
    """The source's subsampled cloud from the cache, or None (no cache, a cloud in memory, or a miss)."""
    if cache is None or isinstance(source, LabelledCloud):
        return None
    identity, fingerprint = _cache_key(source, dl)
    hit = cache.load("clouds", identity, fingerprint)
    if hit is None:
        return None
    arrays, tree, _ = hit
    if not isinstance(tree, cKDTree) or tree.n != len(arrays["points"]):
        tree = cKDTree(arrays["points"])
    return PreparedCloud(arrays["points"], arrays["features"], arrays["labels"], tree, source.path,
                         tuple(source.channels), float(dl), (identity, fingerprint))


MIN_SPHERE_POINTS = 16


@dataclass
class Sphere:
    """One training sphere: points centred on ``center`` (float64), features, labels, its cloud's index and the
    indices of its points in that cloud (what per-point caches, e.g. distillation's teacher outputs, look up)."""

    points: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    center: np.ndarray
    cloud: int
    indices: np.ndarray


class SphereSampler:
    """Random training spheres over prepared clouds, stacked into point-budget batches.

    clouds: prepared clouds (same channels); spec: the network's pyramid (``spec.dl0`` should equal the
    clouds' ``dl``); point_budget: most layer-0 points per batch; radius: sphere radius (default
    ``50 * dl0``); balance_classes: draw centres class-balanced; augmentation: applied to each sphere (None:
    no augmentation); partial_share: when some points carry partial labels (a ground / not-ground file),
    the share of sphere centres drawn among them (the others among fully labelled points), so that large
    partially labelled files do not crowd out the fully labelled ones; None draws among all points alike.
    per_cloud: draw the cloud first, each with the same probability, then a point in it (within the
    full / partial pool chosen by ``partial_share``): a few large clouds (airborne tiles of 1 km^2 decimated
    to 0.3 points/m^2 next to dense 50 m tiles) then do not make up most of the spheres.
    synthetic_share: the share of sphere centres drawn in generated rooms (clouds whose source starts with
    ``synthetic:``), the others in real clouds, whatever their sizes; within each group centres are drawn as
    the other settings say (class-balanced, partial share, per cloud). None draws among all clouds alike.
    A share that needs a group the data lacks (0.5 with no synthetic room) is a :class:`UsageError`.
    thin: (lowest, highest) density in points/m^2: a share ``thin_share`` of the spheres is thinned at random to
    a density drawn log-uniformly between them (:func:`pcseg.geometry.thin_to_density`; a sphere already
    sparser is kept whole), so that sparse surveys (0.1-0.3 points/m^2) lie inside the training distribution
    even where the training tiles are dense. Thinning comes before the augmentation; the features stay those
    of the whole cloud.
    density_cap: points/m^2 no sphere exceeds: every sphere denser than the cap is thinned to it at random (a
    thinned sphere's drawn density lies in ``[thin[0], min(thin[1], density_cap)]``). Inference thins a cloud
    to the same cap (:func:`pcseg.engine.infer.vote_logits`), so that the network meets the densities it
    learnt from: the kernels sum over their neighbours (KPConv eq. 1, SALA eq. 9), so their responses, and the
    batch-norm statistics learnt over them, follow the point density wherever a survey is sparser than the
    ``dl0`` grid.
    """

    def __init__(
        self,
        clouds: Sequence[PreparedCloud],
        spec: PyramidSpec,
        point_budget: int,
        radius: float | None = None,
        balance_classes: bool = False,
        augmentation: Augmentation | None = None,
        partial_share: float | None = None,
        per_cloud: bool = False,
        synthetic_share: float | None = None,
        thin: tuple[float, float] | None = None,
        thin_share: float = 0.5,
        density_cap: float | None = None,
    ):
        if not clouds:
            raise ValueError("the sampler needs at least one cloud")
        if point_budget < 1:
            raise ValueError("point_budget must be positive")
        channels = {c.channels for c in clouds}
        if len(channels) != 1:
            raise ValueError("all clouds must have the same feature channels")
        self.clouds = list(clouds)
        self.spec = spec
        self.point_budget = int(point_budget)
        self.radius = float(radius) if radius is not None else SPHERE_RADIUS_FACTOR * spec.dl0
        self.balance_classes = balance_classes
        self.augmentation = augmentation
        self.rgb_columns = channel_slices(self.clouds[0].channels).get("rgb")
        self.echo_columns = channel_slices(self.clouds[0].channels).get("echo")
        if thin is not None and not (0 < thin[0] <= thin[1] and 0 <= thin_share <= 1):
            raise UsageError(f"thin_density needs 0 < lowest <= highest and thin_share in [0, 1], got {list(thin)} "
                             f"and {thin_share}")
        if density_cap is not None and not density_cap > 0:
            raise UsageError(f"density_cap must be a positive density in points/m^2, got {density_cap}")
        self.density_cap = None if density_cap is None else float(density_cap)
        if thin is not None and self.density_cap is not None:
            thin = (min(thin[0], self.density_cap), min(thin[1], self.density_cap))
        self.thin, self.thin_share = (None if thin is None else (float(thin[0]), float(thin[1]))), float(thin_share)
        sizes = np.array([len(c) for c in self.clouds], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        labels = np.concatenate([c.labels for c in self.clouds])
        self.class_points = {int(k): np.flatnonzero(labels == k) for k in np.unique(labels) if k >= 0}
        self.partial_share = partial_share
        self.per_cloud = bool(per_cloud)
        # per cloud: flat indices of its fully and partially labelled points
        self._cloud_full = [np.flatnonzero(c.labels >= 0) + o for c, o in zip(self.clouds, self._offsets)]
        self._cloud_partial = [np.flatnonzero(c.labels <= -2) + o for c, o in zip(self.clouds, self._offsets)]
        self._full, self._partial = np.concatenate(self._cloud_full), np.concatenate(self._cloud_partial)
        if partial_share is not None and not 0.0 <= partial_share <= 1.0:
            raise ValueError("partial_share must lie in [0, 1]")
        if not self.class_points:
            names = ", ".join(c.source for c in self.clouds[:3]) + (" ..." if len(self.clouds) > 3 else "")
            raise BadInputError(f"no training point has a label the class map knows (in {names}); check "
                                "--label-field and --class-map")
        self.synthetic_share = synthetic_share
        # Centres are drawn in groups of clouds: all of them, or the real clouds and the synthetic rooms.
        self._groups: list[_Group] = [_Group(self, np.arange(len(self.clouds)))] if synthetic_share is None else []
        if synthetic_share is not None:
            if not 0.0 <= synthetic_share <= 1.0:
                raise ValueError("synthetic_share must lie in [0, 1]")
            synthetic = np.array([c.source.startswith(SYNTHETIC_SOURCE) for c in self.clouds])
            for flag, needed, what in ((False, synthetic_share < 1.0, "real clouds"),
                                       (True, synthetic_share > 0.0, "synthetic rooms (synthetic:rooms, "
                                                                     "synthetic:bank-rooms, synthetic:varied-rooms or "
                                                                     "synthetic:cad-rooms)")):
                members = np.flatnonzero(synthetic == flag)
                if needed and not any(len(self._cloud_full[i]) for i in members):
                    raise UsageError(f"synthetic_share={synthetic_share} draws spheres in {what}, but the "
                                     f"training data has none with labels")
                self._groups.append(_Group(self, members))

    def _locate(self, flat: int) -> tuple[int, int]:
        cloud = int(np.searchsorted(self._offsets, flat, side="right") - 1)
        return cloud, int(flat - self._offsets[cloud])

    def _draw_center(self, rng: np.random.Generator) -> tuple[int, int]:
        if self.synthetic_share is None:
            return self._groups[0].draw(rng)
        return self._groups[int(rng.random() < self.synthetic_share)].draw(rng)

    def sample_sphere(self, rng: np.random.Generator, max_points: int | None = None, max_tries: int = 20) -> Sphere:
        """One sphere around a random point (redrawn up to ``max_tries`` times while all its labels are
        ignored); at most ``max_points`` points, the nearest to the centre."""
        for _ in range(max_tries):
            ci, pi = self._draw_center(rng)
            cloud = self.clouds[ci]
            center = cloud.points[pi]
            idx = np.asarray(cloud.tree.query_ball_point(center, self.radius), dtype=np.int64)
            target = self.density_cap
            if self.thin is not None and rng.random() < self.thin_share:
                target = float(np.exp(rng.uniform(np.log(self.thin[0]), np.log(self.thin[1]))))
            if target is not None:
                idx = idx[thin_to_density(cloud.points[idx], target, rng)]
            # A sphere around an isolated point would make a batch that batch norm cannot train on (a batch
            # is cut at the point budget, so it may hold that sphere alone): redraw it like an unlabelled one.
            if len(idx) >= MIN_SPHERE_POINTS and np.any(cloud.labels[idx] != IGNORE):
                break
        if max_points is not None and len(idx) > max_points:
            d2 = np.sum((cloud.points[idx] - center) ** 2, axis=1)
            idx = idx[np.argpartition(d2, max_points - 1)[:max_points]]
        idx.sort()
        pts = cloud.points[idx] - center
        feats = cloud.features[idx]
        if self.augmentation is not None:
            pts, feats = self.augmentation(pts, feats, rng, self.rgb_columns, self.echo_columns)
        return Sphere(pts, np.asarray(feats, dtype=np.float32), cloud.labels[idx], center, ci, idx)

    def sample_spheres(self, rng: np.random.Generator) -> list[Sphere]:
        """Spheres of one batch: as many as fit in the point budget (at least one)."""
        spheres, total = [], 0
        while True:
            s = self.sample_sphere(rng, max_points=self.point_budget if not spheres else None)
            if spheres and total + len(s.points) > self.point_budget:
                return spheres
            spheres.append(s)
            total += len(s.points)
            if total >= self.point_budget:
                return spheres

    def sample_batch(self, rng: np.random.Generator) -> StackedBatch:
        """One stacked batch (:func:`pcseg.data.batch.build_batch`); ``extras`` holds the sphere centres
        (``centers``, (B, 3) float64, source frame), cloud indices (``clouds``, (B,) int64) and, per layer-0 point,
        its index in its cloud (``indices``, (N_0,) int64)."""
        spheres = self.sample_spheres(rng)
        batch = build_batch([s.points for s in spheres], [s.features for s in spheres], self.spec,
                            [s.labels for s in spheres])
        batch.extras["centers"] = np.stack([s.center for s in spheres])
        batch.extras["clouds"] = np.array([s.cloud for s in spheres], dtype=np.int64)
        batch.extras["indices"] = np.concatenate([s.indices for s in spheres])
        return batch

    def batches(self, n: int, seed: int | Sequence[int] = 0) -> Iterator[StackedBatch]:
        """``n`` batches, identical for identical seeds (e.g. ``seed=(run_seed, epoch)``)."""
        rng = np.random.default_rng(seed)
        for _ in range(n):
            yield self.sample_batch(rng)

    def fingerprint(self) -> list:
        """Identifies the data and settings (for caching calibrations); clouds given in memory count by size."""
        key = [[c.cache_key if c.cache_key is not None else ["memory", c.source, len(c)] for c in self.clouds],
               self.radius, self.balance_classes, self.point_budget]
        if self.thin is not None:
            key = key + [["thin", *self.thin, self.thin_share]]
        if self.density_cap is not None:
            key = key + [["density_cap", self.density_cap]]
        return key + [self.synthetic_share] if self.synthetic_share is not None else key


SYNTHETIC_SOURCE = "synthetic:"
"""Sources of generated rooms start with this (``synthetic:rooms#3``, ``synthetic:bank-rooms#3``)."""


class _Group:
    """The clouds ``members`` of a sampler and how a sphere centre is drawn among them: a class first
    (``balance_classes``), partially labelled points with probability ``partial_share``, each cloud equally
    likely (``per_cloud``), or every labelled point alike."""

    def __init__(self, sampler: SphereSampler, members: np.ndarray):
        self.sampler = sampler
        in_group = np.repeat(np.isin(np.arange(len(sampler.clouds)), members), np.diff(sampler._offsets))
        self.class_points = {k: v[in_group[v]] for k, v in sampler.class_points.items()}
        self.class_points = {k: v for k, v in self.class_points.items() if len(v)}
        self.full, self.partial = sampler._full[in_group[sampler._full]], sampler._partial[in_group[sampler._partial]]
        self.cloud_full = [sampler._cloud_full[i] for i in members]
        self.cloud_partial = [sampler._cloud_partial[i] for i in members]
        sizes = np.diff(sampler._offsets)[members]
        self.members, self.starts = members, np.concatenate([[0], np.cumsum(sizes)])

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        s = self.sampler
        if s.balance_classes:
            classes = sorted(self.class_points)
            members = self.class_points[classes[int(rng.integers(len(classes)))]]
            return s._locate(int(members[rng.integers(len(members))]))
        if s.partial_share is not None and len(self.partial) and len(self.full):
            partial = rng.random() < s.partial_share
            if s.per_cloud:
                pools = [p for p in (self.cloud_partial if partial else self.cloud_full) if len(p)]
                pool = pools[int(rng.integers(len(pools)))]
            else:
                pool = self.partial if partial else self.full
            return s._locate(int(pool[rng.integers(len(pool))]))
        if s.per_cloud:
            pools = [p for p in self.cloud_full if len(p)]
            pool = pools[int(rng.integers(len(pools)))]
            return s._locate(int(pool[rng.integers(len(pool))]))
        j = int(rng.integers(self.starts[-1]))  # uniform over the group's points
        k = int(np.searchsorted(self.starts, j, side="right") - 1)
        return int(self.members[k]), j - int(self.starts[k])


def suggest_point_budget(sampler: SphereSampler, spheres_per_batch: float, n_samples: int = 32, seed: int = 0) -> int:
    """A point budget whose batches hold about ``spheres_per_batch`` spheres: that many times the mean sphere
    size over ``n_samples`` unaugmented samples (KPConv supp. A chooses its limit the same way)."""
    rng = np.random.default_rng(seed)
    sizes = [len(sampler.sample_sphere(rng).points) for _ in range(n_samples)]
    return max(1, int(round(spheres_per_batch * float(np.mean(sizes)))))


# ---------------------------------------------------------------------------------------------------------
def fallback_neighbor_limit(radius: float, dl: float) -> int:
    """Cap used when a layer cannot be calibrated: ``ceil(4/3 * pi * (radius / dl)**3)``, the number of grid
    cells of size ``dl`` whose volume fits in the neighbourhood ball (KPConv-PyTorch's histogram bound)."""
    return max(1, int(math.ceil(4.0 / 3.0 * math.pi * (radius / dl) ** 3)))


def _fallback_limits(spec: PyramidSpec) -> list[int]:
    return [fallback_neighbor_limit(spec.radii[l], spec.dl0 * 2**l) for l in range(spec.num_layers)]


def calibrate_neighbor_limits(samples: Sequence[np.ndarray], spec: PyramidSpec,
                              quantile: float = DEFAULT_QUANTILE) -> list[int]:
    """Per-layer neighbour caps from real sample clouds (e.g. sphere points).

    For every sample the pyramid is rebuilt as :func:`pcseg.data.batch.build_batch` does (layer ``l`` =
    grid subsampling at ``dl0 * 2**l``); the cap of layer ``l`` is the ``quantile`` of the sizes of all
    neighbourhoods it applies to: convolution neighbourhoods of layer ``l`` (radius ``radii[l]``) and pooling
    neighbourhoods of layer-``l+1`` points among layer ``l`` (radius ``pool_radius(l)``). Never raises: a
    failure, or a layer with fewer than :data:`MIN_CALIBRATION_POINTS` points, gives the fallback cap
    (:func:`fallback_neighbor_limit`) with a logged warning.
    """
    return _calibrate(samples, spec, quantile)[0]


def _calibrate(samples, spec: PyramidSpec, quantile: float) -> tuple[list[int], bool]:
    """(caps, True when every layer was measured)."""
    fallback = _fallback_limits(spec)
    try:
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must lie in (0, 1], got {quantile}")
        sizes: list[list[np.ndarray]] = [[] for _ in range(spec.num_layers)]
        for pts in samples:
            pts = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
            if len(pts) == 0 or not np.all(np.isfinite(pts)):
                continue
            layer = pts
            for l in range(spec.num_layers):
                sizes[l].append(neighborhood_sizes(layer, spec.radii[l]))
                if l + 1 < spec.num_layers:
                    coarser = grid_subsample(layer, spec.dl0 * 2 ** (l + 1)).points
                    pools = radius_neighbors(coarser, layer, spec.pool_radius(l))
                    sizes[l].append(np.sum(pools < len(layer), axis=1))
                    layer = coarser
        limits, complete = [], True
        for l in range(spec.num_layers):
            s = np.concatenate(sizes[l]) if sizes[l] else np.zeros(0, dtype=np.int64)
            if len(s) < MIN_CALIBRATION_POINTS:
                log.warning("neighbour calibration: layer %d has only %d sample neighbourhoods; using the "
                            "fallback cap %d", l, len(s), fallback[l])
                limits.append(fallback[l])
                complete = False
            else:
                limits.append(max(1, int(np.ceil(np.quantile(s, quantile)))))
        return limits, complete
    except Exception as e:  # calibration must never stop a run
        log.warning("neighbour calibration failed (%s: %s); using the fallback caps %s", type(e).__name__, e, fallback)
        return fallback, False


def calibrated_spec(sampler: SphereSampler, cache: DiskCache | None = None, n_spheres: int = 100,
                    quantile: float = DEFAULT_QUANTILE, seed: int = 0) -> PyramidSpec:
    """``sampler.spec`` with neighbour caps calibrated on ``n_spheres`` augmented training spheres, cached
    under the sampler's data and settings. Never raises (see :func:`calibrate_neighbor_limits`)."""
    spec = sampler.spec
    identity = {"step": "neighbor_limits", "dl0": spec.dl0, "radii": list(spec.radii),
                "pool_radii": None if spec.pool_radii is None else list(spec.pool_radii),
                "quantile": quantile, "n_spheres": n_spheres, "seed": seed,
                "augmentation": repr(sampler.augmentation)}
    try:
        fingerprint = [stable_hash(sampler.fingerprint())]
        if cache is not None:
            hit = cache.load_json("calibration", identity, fingerprint)
            if hit is not None and len(hit.get("neighbor_limits", [])) == spec.num_layers:
                return replace(spec, neighbor_limits=[int(v) for v in hit["neighbor_limits"]])
        rng = np.random.default_rng(seed)
        samples = [sampler.sample_sphere(rng).points for _ in range(n_spheres)]
    except Exception as e:
        log.warning("neighbour calibration could not sample spheres (%s: %s); using fallback caps", type(e).__name__, e)
        return replace(spec, neighbor_limits=_fallback_limits(spec))
    limits, complete = _calibrate(samples, spec, quantile)
    if cache is not None and complete:  # a fallback is not cached: the next run tries again
        cache.save_json("calibration", identity, fingerprint, {"neighbor_limits": limits})
    return replace(spec, neighbor_limits=limits)
