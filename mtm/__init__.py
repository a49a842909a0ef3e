"""mtm: Masked Trajectory Models for offline robot data.

    import mtm
    policy = mtm.load_policy("runs/hopper", mode="rcbc")   # a run directory or a checkpoint
    env = policy.make_env()                                 # the task it was trained on

docs/python.md has the whole loop; `mtm --help` the command line.
"""

from mtm.version import __version__

__all__ = ["__version__", "load_model", "load_policy", "predict"]


def load_policy(path, *, num_envs: int = 1, device="cpu", **settings):
    """The trained model of a run directory (its last checkpoint) or checkpoint directory as an
    `mtm.policy.MTMPolicy` for `num_envs` environments on `device`. Keywords: any field of
    `mtm.policy_config.PolicyConfig` (mode="bc", target_fraction=0.9, ...)."""
    # Imported here, not at the top: `import mtm` (and so `mtm --help`) must not load torch.
    from mtm.policy import MTMPolicy

    return MTMPolicy.from_checkpoint(str(path), num_envs=num_envs, device=device, **settings)


def load_model(path, device="cpu"):
    """The network of a run directory or checkpoint directory, in eval mode (for `predict`)."""
    from mtm.checkpoint import load_checkpoint  # late, as load_policy's
    from mtm.policy import load_model as model_of

    return model_of(load_checkpoint(str(path)), device)


def predict(model, task: str, windows, c=None):
    """The model's answer to "bc", "rcbc", "fd" (next state), "id" (action between two states) or
    "goal" on raw windows, without building masks (mtm.evaluation.predictions.predict)."""
    from mtm.evaluation.predictions import predict as answer  # late, as load_policy's

    return answer(model, task, windows, c)
