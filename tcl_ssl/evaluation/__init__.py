"""Evaluation of frozen backbones: features, kNN, linear probes, retrieval, the suite that runs them."""

from tcl_ssl.evaluation.features import extract_features
from tcl_ssl.evaluation.knn import knn_accuracy, knn_classify, knn_top1, topk_accuracy
from tcl_ssl.evaluation.linear import StandardisedLinear, fit_linear_probe, select_linear_probe
from tcl_ssl.evaluation.suite import PROTOCOLS, EvalSettings, Evaluation, evaluate_backbone

__all__ = [
    "PROTOCOLS",
    "EvalSettings",
    "Evaluation",
    "StandardisedLinear",
    "evaluate_backbone",
    "extract_features",
    "fit_linear_probe",
    "knn_accuracy",
    "knn_classify",
    "knn_top1",
    "select_linear_probe",
    "topk_accuracy",
]
