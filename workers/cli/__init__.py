"""The `birthmark` command line (typer + rich): a sub-app per noun, one top-level error handler."""

from __future__ import annotations

import sys

import redis
import typer

from workers.cli import curate, jobs, services
from workers.cli import score as score_cmd
from workers.cli import train as train_cmd
from workers.cli._common import err_console
from workers.store import InvalidKey, StoreUnavailable

app = typer.Typer(
    name="birthmark",
    help="Batch scoring and dataset curation for skin-lesion photos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(services.app, name="services")
app.add_typer(curate.app, name="curate")
app.add_typer(jobs.app, name="jobs")
app.add_typer(train_cmd.models_app, name="models")
app.command("worker")(services.worker)
app.command("score")(score_cmd.score)
app.command("train")(train_cmd.train)


def _register_optional() -> None:
    from workers.cli import demo, review

    app.add_typer(review.app, name="review")
    app.command("demo")(demo.demo)


_register_optional()


def _unavailable(err: Exception) -> str:
    """The error, one full stop, and what to check: redis-py's own text already ends with one
    ("Error 111 connecting to 127.0.0.1:6379. Connection refused.")."""
    text = str(err).rstrip()
    if not text.endswith((".", "!", "?")):
        text += "."
    return f"{text} Is `birthmark services up` running?"


def main() -> None:
    """Entry point: user errors exit 1 with one clear line; usage errors exit 2 (click)."""
    try:
        app()
    except (ValueError, KeyError, InvalidKey, FileNotFoundError) as err:
        err_console.print(f"[red]error:[/] {err}")
        sys.exit(1)
    except (StoreUnavailable, redis.ConnectionError, redis.TimeoutError) as err:
        err_console.print(f"[red]service unavailable:[/] {_unavailable(err)}")
        sys.exit(1)
    except TimeoutError as err:
        err_console.print(f"[red]timed out:[/] {err}")
        sys.exit(1)
