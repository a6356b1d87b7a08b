"""Makes pytest put the repository root on sys.path, so tests import cli and model."""
