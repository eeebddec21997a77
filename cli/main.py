"""The `apa-fleet` command. Each group lives in its own module; heavy imports stay inside commands."""

from __future__ import annotations

import typer

from cli.accounts import keys_app, tenants_app
from cli.database import db_app
from cli.gateway import gateway
from cli.lti import lti_app
from cli.demo import demo
from cli.evaluate import evaluate
from cli.score import score
from cli.services import beat, run, worker, worker_health
from cli.train import train

app = typer.Typer(help="apa-fleet: pronunciation assessment for learning platforms.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(lti_app, name="lti")
app.command("gateway")(gateway)
app.command()(score)
app.command()(worker)
app.command()(beat)
app.command("worker-health")(worker_health)
app.command()(run)
app.command()(demo)
app.command()(train)
app.command()(evaluate)

if __name__ == "__main__":
    app()
