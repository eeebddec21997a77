"""An independent LTI 1.3 platform for the tests: `lti1p3platform` (PyPI) on FastAPI, on its own port.

The platform side (OIDC auth endpoint, id_token signing, deep-linking response validation, the
OAuth token endpoint and the AGS score service) is the library's code; this module only wires its
abstract classes to FastAPI routes and keeps the platform's data in memory: resource links created
by deep linking, line items, and every score that arrives. A `tamper` option in the message hint
makes the platform sign a bad id_token on purpose (for the negative tests).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from jinja2 import Environment, PackageLoader
from lti1p3platform.ltiplatform import LTI1P3PlatformConfAbstract
from lti1p3platform.membership import Context
from lti1p3platform.message_launch import LTIAdvantageMessageLaunchAbstract
from lti1p3platform.oidc_login import OIDCLoginAbstract
from lti1p3platform.registration import Registration
from lti1p3platform.request import Request as LtiRequest
from lti1p3platform.score import UpdateScoreStatus
from lti1p3platform.service_connector import AssignmentsGradesService, NamesRoleProvisioningService

from tests.conftest import free_port, wait_for_port

LEARNER = "http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"
INSTRUCTOR = "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"
_template = Environment(loader=PackageLoader("lti1p3platform.framework", "templates")).get_template("launch.html")


def _pem_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


class ServerThread:
    """uvicorn serving an ASGI app on a loopback port, in a daemon thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        wait_for_port(self.port, 30)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class PreparedRequest(LtiRequest):
    """lti1p3platform's request wrapper over data already read from a FastAPI request."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.request = meta  # type: ignore[assignment]


async def prepared(request: Request) -> PreparedRequest:
    body = await request.body()
    form: dict[str, Any] = {}
    data: Any = None
    ctype = request.headers.get("content-type", "")
    if "json" in ctype and body:
        data = json.loads(body)
    elif body:
        form = dict(parse_qsl(body.decode()))
    return PreparedRequest({"method": request.method, "form_data": form, "get_data": dict(request.query_params),
                            "headers": request.headers, "content_type": ctype, "path": request.url.path,
                            "json": data})


@dataclass
class LtiPlatform:
    """One LMS: its registration of the tool, its keys, courses, line items and received scores."""

    tool_base: str
    client_id: str = field(default_factory=lambda: f"client-{uuid.uuid4().hex[:8]}")
    deployment_id: str = "dep-1"
    port: int = field(default_factory=free_port)
    resource_links: dict[str, dict[str, Any]] = field(default_factory=dict)
    lineitems: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: list[dict[str, Any]] = field(default_factory=list)
    token_requests: int = 0
    fail_scores_with: int | None = None  # answer the score service with this status (failure tests)
    members: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.private_pem, self.public_pem = _pem_pair()
        self.attacker_pem, _ = _pem_pair()
        self.server: ServerThread | None = None

    # -- the library's abstractions, bound to this platform --------------------------------------
    def registration(self) -> Registration:
        tool = self.tool_base.rstrip("/")
        return (Registration().set_iss(self.issuer).set_client_id(self.client_id)
                .set_deployment_id(self.deployment_id).set_launch_url(f"{tool}/lti/launch")
                .set_deeplink_launch_url(f"{tool}/lti/launch").set_oidc_login_url(f"{tool}/lti/login")
                .set_tool_key_set_url(f"{tool}/lti/jwks").set_platform_public_key(self.public_pem)
                .set_platform_private_key(self.private_pem))

    def config(self) -> LTI1P3PlatformConfAbstract:
        platform = self

        class Conf(LTI1P3PlatformConfAbstract):
            def init_platform_config(self, **kwargs: Any) -> None:
                self._registration = platform.registration()

            def get_registration_by_params(self, **kwargs: Any) -> Registration:
                return platform.registration()

        return Conf()

    @property
    def tool_registration(self) -> dict[str, Any]:
        """What the tool's administrator registers for this platform."""
        return {"issuer": self.issuer, "client_id": self.client_id, "deployment_ids": [self.deployment_id],
                "auth_login_url": f"{self.issuer}/auth", "auth_token_url": f"{self.issuer}/token",
                "keyset_url": f"{self.issuer}/jwks"}

    def start_url(self, user: str, *, kind: str = "resource", resource_link: str | None = None,
                  roles: list[str] | None = None, tamper: str | None = None, accept: str | None = None) -> str:
        query = {"user": user, "kind": kind, "roles": ",".join(roles or [LEARNER])}
        if accept:
            query["accept"] = accept
        if resource_link:
            query["rl"] = resource_link
        if tamper:
            query["tamper"] = tamper
        return f"{self.issuer}/start?{urlencode(query)}"

    def app(self) -> FastAPI:
        platform = self
        app = FastAPI()

        class Login(OIDCLoginAbstract):
            def set_lti_message_hint(self, **kwargs: Any) -> None:
                self._lti_message_hint = json.dumps(kwargs)

            def get_redirect(self, url: str) -> RedirectResponse:
                return RedirectResponse(url, status_code=302)

        class Launch(LTIAdvantageMessageLaunchAbstract):
            hint: dict[str, Any] = {}

            def get_preflight_response(self) -> dict[str, Any]:
                return self._request.get_data

            def render_launch_form(self, launch_data: dict[str, Any], **kwargs: Any) -> HTMLResponse:
                return HTMLResponse(_template.render(launch_data))

            def generate_launch_request(self):  # type: ignore[override]
                tamper = self.hint.get("tamper")
                if not tamper:
                    return super().generate_launch_request()
                message, state = self.get_launch_data()
                key, expiration = platform.private_pem, self.id_token_expiration
                if tamper == "wrong_audience":
                    message.update({"aud": "some-other-tool", "azp": "some-other-tool"})
                elif tamper == "unknown_deployment":
                    message["https://purl.imsglobal.org/spec/lti/claim/deployment_id"] = "dep-not-registered"
                elif tamper == "expired":
                    expiration = -600
                elif tamper == "bad_signature":
                    key = platform.attacker_pem  # signed by another key, under the platform's kid
                headers = {"kid": self._registration.get_kid()}
                return {"state": state, "id_token": Registration.encode_and_sign(message, key, headers, expiration)}

        @app.get("/jwks")
        def jwks() -> JSONResponse:
            conf = platform.config()
            return JSONResponse(conf.get_jwks())

        @app.get("/start")
        def start(user: str, kind: str = "resource", roles: str = LEARNER, rl: str | None = None,
                  tamper: str | None = None, accept: str | None = None) -> RedirectResponse:
            login = Login(None, platform.config())
            login.set_lti_message_hint(kind=kind, roles=roles.split(","), rl=rl, tamper=tamper, accept=accept)
            if kind == "deeplink":
                login.set_deeplinking_launch_url()
            return login.initiate_login(user)

        @app.get("/auth")
        async def auth(request: Request) -> HTMLResponse:
            req = await prepared(request)
            launch = Launch(req, platform.config())
            hint = json.loads(req.get_data.get("lti_message_hint") or "{}")
            launch.hint = hint
            launch.set_user_data(req.get_data["login_hint"], hint.get("roles") or [LEARNER],
                                 full_name=f"User {req.get_data['login_hint']}")
            launch.set_launch_context_claim("course-1", context_title="Phonetics 101", context_label="PH101")
            if hint.get("kind") == "deeplink":
                launch.set_dl(f"{platform.issuer}/deep-link-return", title="Add a read-aloud", extra_data={"x": "1"},
                              accept_types=set(hint["accept"].split(",")) if hint.get("accept") else None)
            else:
                link = platform.resource_links.get(hint.get("rl") or "", {})
                launch.set_resource_link_claim(hint.get("rl") or "rl-none", title=link.get("title"))
                if link.get("custom"):
                    launch.set_custom_parameters_claim(link["custom"])
                lineitem = link.get("lineitem")
                launch.set_ags(f"{platform.issuer}/lineitems",
                               f"{platform.issuer}/lineitems/{lineitem}" if lineitem else None)
                launch.set_nrps(f"{platform.issuer}/memberships")
            return launch.lti_launch()

        @app.post("/deep-link-return")
        async def deep_link_return(request: Request) -> JSONResponse:
            form = dict(parse_qsl((await request.body()).decode()))
            items = platform.config().validate_deeplinking_resp({"JWT": form["JWT"]})
            created = []
            for item in items:
                rl_id = f"rl-{uuid.uuid4().hex[:8]}"
                lineitem = None
                if item.get("lineItem"):
                    lineitem = uuid.uuid4().hex[:8]
                    platform.lineitems[lineitem] = {**item["lineItem"], "resourceLinkId": rl_id}
                platform.resource_links[rl_id] = {"title": item.get("title"), "url": item.get("url"),
                                                  "custom": item.get("custom") or {}, "lineitem": lineitem}
                created.append(rl_id)
            return JSONResponse({"resource_links": created})

        @app.post("/token")
        async def token(request: Request) -> JSONResponse:
            platform.token_requests += 1
            form = dict(parse_qsl((await request.body()).decode()))
            try:
                return JSONResponse(platform.config().get_access_token(form))
            except Exception as exc:  # the library raises on a bad assertion
                return JSONResponse({"error": "invalid_client", "error_description": str(exc)}, status_code=401)

        class Grades(AssignmentsGradesService):
            def find_lineitems(self, *a: Any, **k: Any) -> Any:
                return {"content": list(platform.lineitems.values()), "has_next": False, "next": None}

            def find_lineitem(self, line_item_id: str) -> Any:
                return platform.lineitems[line_item_id]

            def create_lineitem(self, creation_data: Any) -> Any:
                raise NotImplementedError

            def update_lineitem(self, update_data: Any) -> Any:
                raise NotImplementedError

            def delete_lineitem(self, line_item_id: str) -> None:
                raise NotImplementedError

            def update_score(self, line_item_id: str, score: Any) -> UpdateScoreStatus:
                platform.scores.append({"lineitem": line_item_id, **score})
                return UpdateScoreStatus.SUCCESS

            def get_results(self, *a: Any, **k: Any) -> Any:
                raise NotImplementedError

        @app.post("/lineitems/{lineitem}/scores")
        async def scores(lineitem: str, request: Request) -> JSONResponse:
            if platform.fail_scores_with:
                return JSONResponse({"error": "down"}, status_code=platform.fail_scores_with)
            req = await prepared(request)
            service = Grades(req, platform.config(), f"{platform.issuer}/lineitems", f"{platform.issuer}/lineitems/{lineitem}")
            try:
                resp = service.handle_resp(service.handle_update_score, line_item_id=lineitem)
            except jwt.PyJWTError as exc:  # the library lets a bad bearer token escape: answer as an LMS does
                return JSONResponse({"error": f"invalid token: {exc}"}, status_code=401)
            return JSONResponse({"message": resp.message}, status_code=resp.code)

        class Roster(NamesRoleProvisioningService):
            def get_member_data_page(self, *a: Any, **k: Any) -> Any:
                return {"content": list(platform.members), "has_next": False}

            def get_context_by_id(self) -> Context:
                return Context(id="course-1", label="PH101", title="Phonetics 101")

        @app.get("/memberships")
        async def memberships(request: Request) -> JSONResponse:
            req = await prepared(request)
            service = Roster(req, platform.config(), f"{platform.issuer}/memberships")
            resp = service.handle_resp(service.handle_get_members)
            return JSONResponse(resp.result if resp.code == 200 else {"message": resp.message}, status_code=resp.code)

        return app

    def start(self) -> LtiPlatform:
        self.server = ServerThread(self.app(), self.port).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.stop()


# -- a browser: follows the platform's and the tool's redirects and auto-posting forms -------------

_FORM = re.compile(r"<form[^>]*action=['\"]([^'\"]+)['\"]", re.IGNORECASE)
_INPUT = re.compile(r"<input[^>]*name=['\"]([^'\"]+)['\"][^>]*value=['\"]([^'\"]*)['\"]", re.IGNORECASE)


def autopost_form(html: str) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of an auto-submitting form page."""
    action = _FORM.search(html)
    assert action, f"no form in page:\n{html[:2000]}"
    return unescape(action.group(1)), {unescape(k): unescape(v) for k, v in _INPUT.findall(html)}


def follow(browser: httpx.Client, url: str, *, limit: int = 10) -> httpx.Response:
    """GET `url` and follow redirects (the cookie jar keeps the tool's browser cookie)."""
    response = browser.get(url)
    for _ in range(limit):
        if response.status_code not in (301, 302, 303, 307):
            return response
        response = browser.get(response.headers["location"])
    raise AssertionError("too many redirects")


def platform_launch_form(browser: httpx.Client, platform: LtiPlatform, user: str, **kw: Any) -> tuple[str, dict[str, str]]:
    """Start a launch at the platform and stop at its id_token form (not yet posted to the tool)."""
    page = follow(browser, platform.start_url(user, **kw))
    assert page.status_code == 200, page.text[:2000]
    return autopost_form(page.text)


def launch(browser: httpx.Client, platform: LtiPlatform, user: str, **kw: Any) -> httpx.Response:
    """A whole launch: the tool's answer after the id_token post, redirects followed."""
    action, fields = platform_launch_form(browser, platform, user, **kw)
    response = browser.post(action, data=fields)
    if response.status_code in (302, 303):
        response = follow(browser, response.headers["location"])
    return response


def wait_until(predicate, timeout_s: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
