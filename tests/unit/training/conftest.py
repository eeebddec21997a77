"""Fixtures of the training unit tests (shared with the integration tests via tests.training_support)."""

from tests.training_support import tiny_model_path  # noqa: F401
