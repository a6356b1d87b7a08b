"""Scoring beyond the training run: a finished run's model on another cohort (evaluate.py) and
the ECG-measurement baseline on a run's split (ecg_features_baseline.py).

Imports the foundation, lvr.data, lvr.measure, lvr.stats, lvr.report and lvr.train.
"""
