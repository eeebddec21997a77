"""The OpenAPI document says what the gateway really answers (checked by schemathesis in tests).

FastAPI documents its validation refusals as a list-shaped `HTTPValidationError`; the gateway
answers every refusal as `ErrorBody` (`error_handlers`). And some refusals apply to every
operation rather than to the ones a route lists: the edge's 422 for a NUL character (and 413
for a body over its cap), the role check's 401/403 on `/v1/`, and 503 when the database is
unreachable. `document_refusals` rewrites the generated document accordingly.
"""

from __future__ import annotations

from typing import Any

from api_gateway.errors import ErrorBody

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}

_DESCRIPTIONS = {
    401: "Missing, unknown or revoked credentials, or a bad webhook signature",
    403: "The caller's role or scope does not allow this",
    413: "Request body too large",
    422: "Invalid input; `detail.code` says why: `invalid_request` (with `detail.errors` per field), "
    "`invalid_json` (the body is not UTF-8 encoded JSON), `nul_character` (U+0000 in the path, the "
    "query string or the body), or a route's own code",
    503: "A dependency is unreachable (`database_unavailable`, object store, broker); see Retry-After",
}


def _error(status: int, existing: dict[str, Any] | None) -> dict[str, Any]:
    """The gateway's JSON refusal for `status`, keeping what a route documented for it besides JSON
    (a browser-facing LTI route answers its own refusals as HTML; the edge's are JSON everywhere)."""
    description = (existing or {}).get("description") or _DESCRIPTIONS[status]
    if status == 422:
        description = _DESCRIPTIONS[422]
    content = {k: v for k, v in ((existing or {}).get("content") or {}).items() if k != "application/json"}
    out: dict[str, Any] = {**(existing or {}), "description": description,
                           "content": {"application/json": {"schema": ERROR_REF}, **content}}
    if status == 503:
        out["headers"] = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}}}
    return out


def document_refusals(schema: dict[str, Any]) -> dict[str, Any]:
    """Rewrite a FastAPI OpenAPI document in place so its error responses match the gateway's."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorBody" not in components:
        body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components["ErrorBody"] = body
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            statuses = [422]
            if method in ("post", "put", "patch"):
                statuses.append(413)
            if path.startswith("/v1/"):
                statuses += [401, 403, 503]
            for status in statuses:
                key = str(status)
                if status in (413, 422) or key not in responses:  # the edge's refusals: JSON on every route
                    responses[key] = _error(status, responses.get(key))
                elif status == 503:
                    responses[key].setdefault("headers", _error(503, None)["headers"])
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema
