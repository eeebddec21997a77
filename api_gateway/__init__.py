"""The HTTP gateway: signed LMS webhooks in, score history out. Never imports torch."""
