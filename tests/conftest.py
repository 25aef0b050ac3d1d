"""Shared fixtures. Real data lives in ../shared/data (beside the checkout); tests that need it skip cleanly."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PCSEG_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cad_root(shared_data) -> Path:
    """../shared/data/cad (the CAD meshes and their catalog.json), or skip the test when it is absent."""
    root = shared_data / "cad"
    if not (root / "catalog.json").is_file():
        pytest.skip("no ../shared/data/cad/catalog.json")
    return root


@pytest.fixture(scope="session")
def als_files(shared_data) -> list[Path]:
    files = sorted(p for p in (shared_data / "als").glob("*.la[sz]"))
    if not files:
        pytest.skip("no LAS/LAZ tiles in ../shared/data/als")
    return files


@pytest.fixture
def one_thread():
    """Small tensors: one torch thread avoids OpenMP oversubscription on a busy machine (measured 10x faster)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["slots", "whole"])
def reduction_path(request, monkeypatch):
    """Run a test with the slot-by-slot neighbour reductions forced (pcseg.nn.gather.SlotPlan), then with the
    whole-tensor ones (what several threads pick for small layers): both must give the same numbers."""
    from pcseg.nn.gather import SlotPlan

    monkeypatch.setattr(SlotPlan, "pays", lambda self, channels, calls=4: request.param == "slots")
    return request.param
