"""Task definitions for mtm: gymnasium ids in the `mtm/` namespace, scripted experts, references."""


def register_envs() -> None:
    """Called by gymnasium at import time through the `gymnasium.envs` entry point."""
