"""The library behind the scripts, in sub-packages by role.

Foundation modules, importable from anywhere: `config` and `options` (the scripts' constants and
their rules), `errors` (UserError, run_script), `choices` (lists of allowed values), `leads`
(lead and wave names), `run_folder` (atomic writes, output folders, run.json).

Sub-packages, in import order (each may import the foundation and the packages before it,
never one after it; tests/test_layout.py checks this):
    data, measure, stats  <  prepare, report  <  train  <  explain, evaluate
Scripts import this package; the package imports `model/` and never a script.
"""
