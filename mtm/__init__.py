"""mtm: Masked Trajectory Models for offline robot data.

    import mtm
    policy = mtm.load_policy("runs/hopper", mode="rcbc")   # a run directory or a checkpoint
    env = policy.make_env()                                 # the task it was trained on

docs/python.md has the whole loop; `mtm --help` the command line.
"""

from mtm.version import __version__

__all__ = ["__version__", "load_policy"]


def load_policy(path, *, num_envs: int = 1, device="cpu", **settings):
    """The trained model of a run directory (its last checkpoint) or checkpoint directory as an
    `mtm.policy.MTMPolicy` for `num_envs` environments on `device`. Keywords: any field of
    `mtm.policy_config.PolicyConfig` (mode="bc", target_fraction=0.9, ...)."""
    # Imported here, not at the top: `import mtm` (and so `mtm --help`) must not load torch.
    from mtm.policy import MTMPolicy

    return MTMPolicy.from_checkpoint(str(path), num_envs=num_envs, device=device, **settings)
