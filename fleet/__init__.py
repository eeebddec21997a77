"""Shared pieces every process uses: settings, object storage, the CLI."""
