"""moto's S3 emulator served by uvicorn (WSGI interface), which keeps connections alive.

moto's own server (werkzeug) answers every request with `Connection: close`, so no client can
show that it reuses connections against it; a real S3 endpoint keeps them open. Run it with
`python -m uvicorn --interface wsgi tests.moto_keepalive:app --port N`.
"""

from __future__ import annotations

from moto.moto_server.threaded_moto_server import DomainDispatcherApplication
from moto.server import create_backend_app

app = DomainDispatcherApplication(create_backend_app)
