"""Experiments: many pretraining runs and their tables and plots.

- :mod:`~tcl_ssl.experiments.compare`: methods x seeds under one budget (``tcl-ssl compare``);
- :mod:`~tcl_ssl.experiments.sweep`: a grid of one method's options (``tcl-ssl sweep``);
- :mod:`~tcl_ssl.experiments.summarize`: finished runs, mean ± std over seeds (``tcl-ssl summarize``);
- :mod:`~tcl_ssl.experiments.runner`: running, resuming and reusing planned runs;
- :mod:`~tcl_ssl.experiments.tables` and :mod:`~tcl_ssl.experiments.plots`: their results.

The library (loss, methods, training, evaluation) never imports this package.
"""
