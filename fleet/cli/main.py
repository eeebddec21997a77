"""The `apa-fleet` command. Each group lives in its own module; heavy imports stay inside commands."""

from __future__ import annotations

import typer

from fleet.cli.accounts import keys_app, tenants_app
from fleet.cli.database import db_app
from fleet.cli.gateway import gateway
from fleet.cli.demo import demo
from fleet.cli.evaluate import evaluate
from fleet.cli.score import score
from fleet.cli.services import run, worker
from fleet.cli.train import train

app = typer.Typer(help="apa-fleet: pronunciation assessment for learning platforms.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.command("gateway")(gateway)
app.command()(score)
app.command()(worker)
app.command()(run)
app.command()(demo)
app.command()(train)
app.command()(evaluate)

if __name__ == "__main__":
    app()
