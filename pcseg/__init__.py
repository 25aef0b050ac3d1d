"""pcseg: segment and detect objects in point clouds."""

__version__ = "0.1.0"
