"""deploy/docker-compose.yml: valid Compose (the `compose-spec` parser, a strict Compose
Specification parser: unknown keys and wrong types fail; references are checked here), and the
same shape as the cluster: migrations first, one beat, every queue served."""

from __future__ import annotations

from typing import Any

import pytest
from compose_spec import PyOptions

from fleet.queue import DELIVER_QUEUE, SCORE_QUEUE, TRAIN_QUEUE
from tests.deploy.support import COMPOSE_FILE, DEPLOY, parse_cli, runs_beat, worker_queues


def _parse(text: str) -> dict[str, Any]:
    compose = PyOptions(apply_merge=True).from_yaml(text)  # YAML merge keys (<<) as Compose applies them
    compose.validate()
    return compose.to_dict()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _parse(COMPOSE_FILE.read_text())


def test_the_parser_rejects_an_invalid_file() -> None:
    text = COMPOSE_FILE.read_text()
    for broken in (text.replace("stop_grace_period: 960s", "stop_grace_periode: 960s", 1),
                   text.replace("count: 1", "count: one", 1)):
        assert broken != text
        with pytest.raises(ValueError):
            _parse(broken)


def test_builds_use_the_dockerfiles_here(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" in service:
            assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
        else:
            assert "image" in service, name


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume.get("source", "")
            if source and not source.startswith(("/", ".", "~")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_app_services_run_real_commands_after_the_migration(compose: dict[str, Any]) -> None:
    services = compose["services"]
    app = {name: s for name, s in services.items() if "build" in s}
    [migrate] = [name for name, s in app.items() if parse_cli(s["command"])[0] == "db upgrade"]
    for name, service in app.items():
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        if name != migrate:
            assert service["depends_on"][migrate]["condition"] == "service_completed_successfully", name


def test_one_beat_and_every_queue_served(compose: dict[str, Any]) -> None:
    commands = {name: s["command"] for name, s in compose["services"].items() if "build" in s}
    beats = [name for name, cmd in commands.items() if runs_beat(cmd)]
    assert len(beats) == 1 and parse_cli(commands[beats[0]])[0] == "beat"
    served = set().union(*(worker_queues(cmd) for cmd in commands.values()))
    assert served == {SCORE_QUEUE, DELIVER_QUEUE, TRAIN_QUEUE}
    [train] = [cmd for cmd in commands.values() if TRAIN_QUEUE in worker_queues(cmd)]
    assert parse_cli(train)[1]["concurrency"] == 1
