"""Cohorts: reading and checking beat files and cohort.json, patients, the patient-level split,
the beat datasets that feed a network, the geometry a model expects, and the demo cohort.

Imports the foundation only.
"""
