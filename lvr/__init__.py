"""The library behind the scripts: cohorts, training, metrics, explanations and their figures.

The README's "Code map" lists one line per module. Scripts import this package; the package
imports `model/` and never a script.
"""
