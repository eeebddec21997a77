"""Celery workers: scoring (`score` queue), LMS result delivery and the sweeper (`deliver`)."""
