"""`birthmark services` and `birthmark worker`: run the stack on this machine."""

from __future__ import annotations

import os

import typer

from workers import services as svc
from workers.cli._common import console, table
from workers.runtime import redact_url, redis_url, running_redis_url
from workers.settings import get_settings

app = typer.Typer(
    help="Embedded redis + workers + beat as background processes.", no_args_is_help=True
)


@app.command()
def up(beat: bool = typer.Option(True, help="Also start celery beat (schedules)")) -> None:
    """Start redis (embedded unless BIRTHMARK_REDIS_URL is set), a worker per queue and beat."""
    pids = svc.services_up(get_settings(), beat=beat, redis_url=redis_url())
    console.print(table("services", ["service", "pid"], [[k, v] for k, v in pids.items()]))
    console.print(f"redis: {redact_url(redis_url())}   logs: {get_settings().home / 'logs'}")


@app.command()
def down(keep_redis: bool = typer.Option(False, help="Leave the embedded redis running")) -> None:
    """Stop everything `services up` started, by PID."""
    stopped = svc.services_down(get_settings(), keep_redis=keep_redis)
    console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command()
def status() -> None:
    """Which services run, and the queue lengths."""
    import redis

    running = svc.services_status(get_settings())
    rows = [[k, v or "-", "running" if v else "stopped"] for k, v in running.items()]
    console.print(table("services", ["service", "pid", "state"], rows))
    url = running_redis_url()  # asking must not start the embedded redis again
    if url is None:
        console.print("redis: stopped (the embedded one starts with the next command)")
        return
    try:
        r = redis.Redis.from_url(url, socket_connect_timeout=1)
        queues = {q: r.llen(q) for q in ("score", "train", "curation")}
        console.print(f"redis {redact_url(url)}: queued {queues}")
    except redis.ConnectionError:
        console.print("[red]redis is not reachable[/]")


def worker(
    queue: str = typer.Option(..., "-Q", "--queue", help="score | train | curation"),
    concurrency: int | None = typer.Option(None, "-c", "--concurrency"),
    pool: str | None = typer.Option(None, "-P", "--pool", help="solo | threads | prefork"),
) -> None:
    """Run a worker in the foreground (a thin wrapper over `celery -A workers.app worker`)."""
    args = svc.worker_command(queue, concurrency=concurrency, pool=pool)
    os.environ.setdefault("BIRTHMARK_REDIS_URL", redis_url())
    os.execvp(args[0], args)
