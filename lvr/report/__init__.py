"""What a run shows: report.html and its TRIPOD+AI table, the participant flow and cohort
characteristics, predictions.csv, the test results' files and console lines, and every figure.

Imports the foundation, lvr.data, lvr.measure and lvr.stats; never a model or a training loop.
"""
