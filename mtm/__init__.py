"""mtm: Masked Trajectory Models for offline robot data."""

__version__ = "0.1.0"
