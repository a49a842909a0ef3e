"""Evaluation of a trained model, for `mtm eval` and training alike (it imports nothing of training):
rollouts (the model as a policy in its env: returns, scores, videos, contact sheets) and predictions
(errors on held-out windows next to the mean-prediction baseline), and for a model with a critic,
whether its Q ranks the held-out data's actions (critic).
"""

from mtm.evaluation.predictions import evaluate_predictions, prediction_errors
from mtm.evaluation.rollouts import evaluate_checkpoint, evaluate_policy, format_report

__all__ = ["evaluate_checkpoint", "evaluate_policy", "evaluate_predictions", "format_report", "prediction_errors"]
