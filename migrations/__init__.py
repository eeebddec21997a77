"""Alembic environment and versions; `apa-fleet db upgrade` runs them (see migrations/runner.py)."""
