"""The package version, in a module of its own so that every layer may read it (the package root,
mtm/__init__.py, is the public API and imports from the top layers)."""

__version__ = "0.1.0"
