"""The former name of :mod:`tcl_ssl.evaluation.run` (the evaluation suite on a finished run's
backbone), kept so that code written against it still imports: ``tcl_ssl.evaluate.read_features``
and ``evaluate_run`` are the same functions."""

from tcl_ssl.evaluation.run import eval_settings, evaluate_run, read_features, write_features

__all__ = ["eval_settings", "evaluate_run", "read_features", "write_features"]
