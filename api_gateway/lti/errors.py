"""A refused LTI request: a code for logs and tests, a sentence for the person in the browser."""

from __future__ import annotations


class LaunchRefused(Exception):
    """Raised anywhere in login/launch validation; the route renders it as an error page."""

    def __init__(self, code: str, message: str, status_code: int = 401) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status_code = status_code
