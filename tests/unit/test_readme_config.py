"""The README's configuration table and the settings class name the same variables."""

from __future__ import annotations

import re
from pathlib import Path

from fleet.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_variables() -> set[str]:
    text = README.read_text()
    table = text[text.index("| variable | default | meaning |"):]
    rows = table.splitlines()[2:]
    rows = rows[: next(i for i, line in enumerate(rows) if not line.startswith("|"))]
    return {name for row in rows for name in re.findall(r"`(APA_[A-Z0-9_]+)`", row.split("|")[1])}


def test_readme_table_matches_settings_fields() -> None:
    settings = {f"APA_{name.upper()}" for name in Settings.model_fields}
    documented = readme_variables()
    assert sorted(settings - documented) == [], "settings missing from the README's table"
    assert sorted(documented - settings) == [], "README rows for settings that do not exist"
