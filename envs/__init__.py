"""Task definitions for mtm: scripted experts, reference scores, pixel observations.

- ``envs.tasks.TASKS``: the tasks mtm knows beyond the gymnasium registry (expert, dataset recipe).
- ``envs.experts``: scripted experts, batched numpy controllers that act from the observation.
- ``envs.references``: reference returns for normalised scores, with their provenance.
- ``envs.pixels``: the {"state", "pixels"} observation wrapper for MuJoCo tasks.

This module imports nothing: gymnasium imports it while it is itself starting up (the
``gymnasium.envs`` entry point in pyproject.toml), before any env could be made.
"""


def register_envs() -> None:
    """Register mtm's own env ids (namespace ``mtm/``) with gymnasium; called by its entry point.

    Every task so far is a stock gymnasium id (Reacher-v5); pixel observations are a wrapper chosen
    at make time (``envs.pixels.make_pixel_env``) and recorded with the dataset, not a separate id.
    A task that needs its own simulator code registers it here with ``gymnasium.register``.
    """
