"""Evaluation of a trained model, used by `mtm eval` and by training alike (training imports it; it
imports nothing of training):

    rollouts     the model as a policy in its environment: returns, normalised scores, videos,
                 contact sheets (evaluate_policy, evaluate_checkpoint, format_report)
    predictions  its predictions on held-out windows, in raw units, next to the mean-prediction
                 baseline: BC, RCBC, forward and inverse dynamics (prediction_errors,
                 evaluate_predictions)
"""

from mtm.evaluation.predictions import evaluate_predictions, prediction_errors
from mtm.evaluation.rollouts import evaluate_checkpoint, evaluate_policy, format_report

__all__ = ["evaluate_checkpoint", "evaluate_policy", "evaluate_predictions", "format_report", "prediction_errors"]
