"""Statistics of a model's predictions: discrimination metrics with patient-bootstrap intervals,
calibration, decision curves, the operating point, subgroups, and DeLong's paired test.

Numbers in, numbers out: no model, no files. Imports the foundation only.
"""
