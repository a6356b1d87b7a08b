"""From hospital recordings to a cohort folder: record formats, record tables (PTB-XL or the
user's CSV), one record to checked beats, and the writer that runs them in parallel.

Imports the foundation and lvr.data.
"""
