"""The record: SQLAlchemy 2 models, engine/session, queries. Imports nothing of ours."""
