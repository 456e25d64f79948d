"""Benchmarks that print ratios (``tcl-ssl bench loss|augment``); not imported by the library."""
