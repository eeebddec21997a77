"""deploy/k8s: every document validates against its schema, and the fleet has what a cluster needs.

Kubernetes' own kinds are checked against the official OpenAPI schemas bundled by
`kubernetes-validate`, in strict mode (an unknown field, e.g. a misspelt probe, fails). KEDA's
ScaledObject is a CRD those schemas do not have; it is checked against a closed schema written
for this project (schemas/keda-scaledobject.schema.json). Any other kind fails the test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from fleet.queue import DELIVER_QUEUE, SCORE_QUEUE, TRAIN_QUEUE, make_celery
from fleet.settings import Settings
from tests.deploy.support import (
    K8S, KUBERNETES_VERSION, containers, k8s_documents, of_kind, parse_cli, runs_beat, worker_queues,
    workload_containers,
)

KEDA_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "keda-scaledobject.schema.json").read_text())
DOCS = k8s_documents()


def _doc_id(item: tuple[Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.name}:{doc['kind']}/{doc['metadata']['name']}"


def _validate(doc: dict[str, Any]) -> None:
    if doc.get("apiVersion", "").startswith("keda.sh/"):
        jsonschema.Draft202012Validator(KEDA_SCHEMA).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("item", DOCS, ids=[_doc_id(d) for d in DOCS])
def test_document_validates_against_its_schema(item: tuple[Path, dict[str, Any]]) -> None:
    _validate(item[1])


def test_validation_rejects_a_misspelt_field() -> None:
    """The strict schemas are in force: a typo the API server would silently drop fails here."""
    deployment = json.loads(json.dumps(of_kind("Deployment")[0]))
    container = containers(deployment)[0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        _validate(deployment)
    scaled = json.loads(json.dumps(of_kind("ScaledObject")[0]))
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 16  # KEDA wants strings
    with pytest.raises(jsonschema.ValidationError):
        _validate(scaled)


def test_every_container_runs_a_real_cli_command() -> None:
    """Each container's args parse with the real `apa-fleet` CLI (a renamed option fails here)."""
    for doc, container in workload_containers():
        assert "command" not in container, f"{doc['metadata']['name']}: use args (the image has no entrypoint)"
        parse_cli(container["args"])


def test_every_container_has_resource_requests_and_a_memory_limit() -> None:
    for doc, container in workload_containers():
        resources = container.get("resources", {})
        name = doc["metadata"]["name"]
        assert {"cpu", "memory"} <= set(resources.get("requests", {})), f"{name}: cpu and memory requests"
        assert "memory" in resources.get("limits", {}), f"{name}: a memory limit"


def test_long_running_containers_have_liveness_and_readiness_probes() -> None:
    for deployment in of_kind("Deployment"):
        for container in containers(deployment):
            name = deployment["metadata"]["name"]
            assert "livenessProbe" in container, f"{name}: liveness probe"
            assert "readinessProbe" in container, f"{name}: readiness probe"


def test_worker_probes_check_the_worker_the_container_runs() -> None:
    """A score worker's liveness probe is `apa-fleet worker-health` for exactly its queues: it reads
    the pool children's heartbeat files, so it fails a worker whose children keep dying (the main
    process would still answer a ping). Every other worker probe pings the node name `apa-fleet
    worker` takes, `<queues joined by ->@<hostname>.<pid>`; PID 1 in a pod."""
    for deployment in of_kind("Deployment"):
        for container in containers(deployment):
            queues = worker_queues(container["args"])
            if not queues:
                continue
            name = deployment["metadata"]["name"]
            _path, params = parse_cli(container["args"])
            names = [q.strip() for q in params["queues"].split(",") if q.strip()]
            node = f'{"-".join(names)}@$(hostname).1'
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if probe not in container:
                    continue
                command = container[probe]["exec"]["command"]
                if probe == "livenessProbe" and SCORE_QUEUE in queues:
                    path, health = parse_cli(command)
                    assert path == "worker-health", (name, probe, command)
                    assert [q.strip() for q in health["queues"].split(",")] == names, (name, probe)
                else:
                    assert f'--destination "{node}"' in " ".join(command), (name, probe)


def test_no_manifest_repeats_a_mapping_key() -> None:
    """kubectl refuses a document with a repeated key; PyYAML would silently keep the last one (a
    stale second `livenessProbe` would pass every other test here)."""
    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [loader.construct_object(k, deep=deep) for k, _v in node.value]
        repeated = {k for k in keys if keys.count(k) > 1}
        assert not repeated, f"{node.start_mark}: repeated key(s) {sorted(map(str, repeated))}"
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in sorted(K8S.glob("*.yaml")):
        assert [doc for doc in yaml.load_all(path.read_text(), Loader=StrictLoader) if doc], path


def test_a_migrations_job_runs_db_upgrade() -> None:
    jobs = [job for job in of_kind("Job") if any(parse_cli(c["args"])[0] == "db upgrade" for c in containers(job))]
    assert len(jobs) == 1
    spec = jobs[0]["spec"]
    assert spec.get("parallelism", 1) == 1 and spec["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")


def test_exactly_one_beat_in_a_single_replica_deployment_that_never_overlaps() -> None:
    beats = [(doc, c) for doc, c in workload_containers() if runs_beat(c["args"])]
    assert len(beats) == 1, [doc["metadata"]["name"] for doc, _c in beats]
    doc, container = beats[0]
    assert parse_cli(container["args"])[0] == "beat", "beat runs on its own, not inside a (scalable) worker"
    assert doc["kind"] == "Deployment" and doc["spec"]["replicas"] == 1
    assert doc["spec"]["strategy"]["type"] == "Recreate"
    assert not any(so["spec"]["scaleTargetRef"]["name"] == doc["metadata"]["name"] for so in of_kind("ScaledObject"))


def test_every_queue_has_workers_and_training_runs_one_job_at_a_time() -> None:
    consumed: dict[str, list[tuple[dict, dict]]] = {}
    for doc, container in workload_containers():
        for queue in worker_queues(container["args"]):
            consumed.setdefault(queue, []).append((doc, container))
    assert set(consumed) == {SCORE_QUEUE, DELIVER_QUEUE, TRAIN_QUEUE}
    [(train, container)] = consumed[TRAIN_QUEUE]
    assert parse_cli(container["args"])[1]["concurrency"] == 1
    assert train["spec"]["replicas"] == 1 and train["spec"]["strategy"]["type"] == "Recreate"


def test_score_workers_have_a_disruption_budget_and_outlast_their_longest_task() -> None:
    hard_limit = make_celery(Settings()).conf.task_time_limit
    budgets = of_kind("PodDisruptionBudget")
    scorers = [doc for doc in of_kind("Deployment")
               if any(SCORE_QUEUE in worker_queues(c["args"]) for c in containers(doc))]
    assert len(scorers) == 2  # GPU (qwen2-audio) and CPU (gop)
    engines = set()
    for deployment in scorers:
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, deployment["metadata"]["name"]
        assert covering[0]["spec"]["maxUnavailable"] == 1
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= hard_limit
        env = {e["name"]: e.get("value") for c in containers(deployment) for e in c.get("env", [])}
        engines.add(env["APA_ENGINE"])
    assert engines == {"qwen2-audio", "gop"}


def test_selectors_match_their_pods_and_services_find_their_port() -> None:
    deployments = of_kind("Deployment")
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    for service in of_kind("Service"):
        targets = [d for d in deployments
                   if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1
        ports = {p.get("name") for c in containers(targets[0]) for p in c.get("ports", [])}
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"])


def test_keda_scales_score_workers_on_the_score_list() -> None:
    """Each ScaledObject targets a Deployment that consumes the very list its trigger measures."""
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    scaled = of_kind("ScaledObject")
    assert {so["spec"]["scaleTargetRef"]["name"] for so in scaled} == {"apa-score-worker", "apa-score-worker-cpu"}
    for so in scaled:
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        for trigger in so["spec"]["triggers"]:
            queue = trigger["metadata"]["listName"]
            assert queue == SCORE_QUEUE
            assert any(queue in worker_queues(c["args"]) for c in containers(target))
            assert trigger["metadata"]["databaseIndex"] == "0"  # the /0 of APA_BROKER_URL (README)
