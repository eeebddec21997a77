"""`/docs` works offline (no CDN) and `/` says where the docs and health endpoints are."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from api_gateway.app import create_app
from fleet.settings import Settings


def _client(tmp_path: Path) -> TestClient:
    return TestClient(create_app(Settings(var_dir=tmp_path)))


def test_docs_page_loads_every_asset_from_the_gateway(tmp_path: Path) -> None:
    client = _client(tmp_path)
    page = client.get("/docs")
    assert page.status_code == 200
    refs = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    refs += re.findall(r"""url:\s*['"]([^'"]+)['"]""", page.text)
    assert refs and not [r for r in refs if "://" in r or r.startswith("//")], refs  # nothing remote
    for ref in refs:
        got = client.get(ref)
        assert got.status_code == 200 and got.content, ref
    assert "openapi" in client.get("/openapi.json").json()
    assert client.get("/redoc").status_code == 404  # ReDoc needs a CDN: not offered


def test_front_page_points_to_docs_and_health(tmp_path: Path) -> None:
    client = _client(tmp_path)
    links = client.get("/").json()["links"]
    assert links["docs"] == "/docs" and links["health"] == "/healthz"
    html = client.get("/", headers={"accept": "text/html"})
    assert html.headers["content-type"].startswith("text/html") and 'href="/docs"' in html.text
    assert "/" not in client.get("/openapi.json").json()["paths"]  # not part of the API
