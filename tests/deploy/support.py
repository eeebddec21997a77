"""Reading the deploy files: Kubernetes documents, their containers, and the CLI commands they run.

The manifests and the compose file start processes with `apa-fleet ...` argument lists; parsing
those lists with the real CLI (without running them) is what keeps a renamed command or option
from reaching a cluster unnoticed.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import typer
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "docker-compose.yml"
DOCKERFILES = sorted(DEPLOY.glob("Dockerfile.*"))
# The cluster version the manifests must validate against (the oldest one we support).
KUBERNETES_VERSION = "1.30"
WORKLOAD_KINDS = {"Deployment", "Job"}


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """Every non-empty YAML document under deploy/k8s, with the file it came from."""
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(K8S.glob("*.yaml")):
        with path.open() as fh:
            docs.extend((path, doc) for doc in yaml.safe_load_all(fh) if doc)
    return docs


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _path, doc in k8s_documents() if doc["kind"] == kind]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The containers of a Deployment or Job."""
    return doc["spec"]["template"]["spec"]["containers"]


def workload_containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for _path, doc in k8s_documents():
        if doc["kind"] in WORKLOAD_KINDS:
            for container in containers(doc):
                yield doc, container


@lru_cache(maxsize=1)
def _cli() -> Any:
    from cli.main import app

    return typer.main.get_command(app)


def parse_cli(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse `apa-fleet ...` with the real CLI, without running it: (command path, its parameters).

    Raises the CLI's UsageError (unknown command or option, bad value) like the binary would.
    (Typer ships its own copy of click, so groups are recognised by their `resolve_command`.)
    """
    assert argv[0] == "apa-fleet", f"not an apa-fleet command: {argv}"
    command = _cli()
    ctx = command.make_context("apa-fleet", list(argv[1:]))
    path: list[str] = []
    while hasattr(command, "resolve_command"):
        protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", [])
        pending = [*protected, *ctx.args]
        name, command, rest = command.resolve_command(ctx, pending)
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    return " ".join(path), dict(ctx.params)


def worker_queues(argv: list[str]) -> set[str]:
    """The queues an `apa-fleet worker` command consumes (empty for other commands)."""
    path, params = parse_cli(argv)
    if path != "worker":
        return set()
    return {q.strip() for q in params["queues"].split(",") if q.strip()}


def runs_beat(argv: list[str]) -> bool:
    path, params = parse_cli(argv)
    return path == "beat" or (path == "worker" and bool(params.get("beat")))
