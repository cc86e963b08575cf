"""`birthmark train` and `birthmark models`: queue training; inspect and steer the registry."""

from __future__ import annotations

import typer

from workers import registry
from workers.cli._common import console, err_console, known, print_json, table, wait_for_job
from workers.runtime import store
from workers.submit import submit_task_job


def _auc(metrics: dict) -> str:
    """``0.841 [0.795-0.882]``: the AUC and, when the card has one, its 95% bootstrap interval."""
    text = f"{metrics.get('roc_auc', float('nan')):.3f}"
    low, high = metrics.get("roc_auc_ci") or (None, None)
    if low is not None and high is not None:
        text += f" [{low:.3f}-{high:.3f}]"
    return text


def train(
    data: str | None = typer.Option(None, help="Curated version (default: LATEST)"),
    epochs: int | None = typer.Option(None, min=1, help="Default: BIRTHMARK_TRAIN_EPOCHS"),
    arch: str | None = typer.Option(None, help="resnet10_multimodal | resnet10_image"),
    image_size: int | None = typer.Option(None, min=32, help="Training resolution (px)"),
    seed: int | None = typer.Option(
        None, min=0, help="Seed for initialisation, sampling and augmentation (default 0)"
    ),
    flips: bool | None = typer.Option(
        None,
        "--flips/--no-flips",
        help="Calibrate and score with test-time flips (default: BIRTHMARK_TRAIN_TEST_TIME_FLIPS)",
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow progress (epoch, loss, val AUC, ETA)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Queue a training run on the `train` queue; it is promoted only if it beats the champion."""
    from workers.tasks.train import run

    if arch is not None:
        import models

        if arch not in models.ARCHS:
            raise typer.BadParameter(f"--arch {arch!r}: choose one of {', '.join(models.ARCHS)}")
    if data is not None:  # here, not hours later in the worker
        from workers.curating import read_version_summary

        with known("--data"):
            read_version_summary(store(), data)
    params = {
        "data": data,
        "epochs": epochs,
        "arch": arch,
        "image_size": image_size,
        "seed": seed,
        "test_time_flips": flips,
        "trigger": "cli",
    }
    job_id, _ = submit_task_job(run, kind="train", params=params)
    if not wait:
        print_json({"job_id": job_id}) if as_json else console.print(
            f"queued training run [bold]{job_id}[/]"
        )
        return
    job = wait_for_job(job_id, quiet=as_json)
    if as_json:
        print_json(job)
    elif job["status"] == "done":
        res = job["result"]
        m = res["metrics"]
        nan = float("nan")
        console.print(
            f"model [bold]{res['model_id']}[/] on {res['data_version']}: "
            f"test AUC {_auc(m['overall'])}, phone-like AUC {_auc(m['phone_like'])}, "
            f"others AUC {_auc(m.get('not_phone_like', {}))}; "
            f"ECE {m['overall']['ece']:.3f} "
            f"(a calibrated model: ~{m['overall'].get('ece_floor', nan):.3f})"
        )
        console.print(("promoted: " if res["promoted"] else "challenger: ") + res["reason"])
    else:
        err_console.print(f"[red]{job_id} {job['status']}[/]: {job.get('message', '')}")
    if job["status"] == "failed":
        raise typer.Exit(1)


models_app = typer.Typer(
    help="The model registry: list, show, promote, rollback.", no_args_is_help=True
)


@models_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """All registered models; the champion is marked."""
    st = store()
    cards = registry.list_models(st)
    champ = registry.champion_id(st)
    if as_json:
        print_json([{**c, "champion": c["model_id"] == champ} for c in cards])
        return
    rows = []
    for c in cards:
        m = (c.get("metrics") or {}).get("overall", {})
        p = (c.get("metrics") or {}).get("phone_like", {})
        rows.append(
            [
                "*" if c["model_id"] == champ else "",
                c["model_id"],
                c.get("arch"),
                c.get("data_version"),
                _f(m.get("roc_auc")),
                _f(p.get("roc_auc")),
                _f(m.get("ece")),
                c.get("created_at"),
            ]
        )
    console.print(
        table("models", ["", "model", "arch", "data", "AUC", "phone AUC", "ECE", "created"], rows)
    )


def _f(v) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


@models_app.command()
def show(model_id: str = typer.Argument(None, help="Default: the champion")) -> None:
    """A model's card (JSON)."""
    st = store()
    if model_id is None:
        champion = registry.champion_id(st)
        if champion is None:
            raise typer.BadParameter("no champion yet; run `birthmark train`")
        print_json(registry.read_card(st, champion))  # the pointer's card gone: failed, not usage
        return
    with known("MODEL_ID"):
        card = registry.read_card(st, model_id)
    print_json(card)


@models_app.command()
def promote(
    model_id: str, reason: str = typer.Option("manual promotion", help="Recorded in history")
) -> None:
    """Make MODEL_ID the champion now."""
    with known("MODEL_ID"):
        registry.promote(store(), model_id, reason=reason, actor="cli")
    console.print(f"champion: [bold]{model_id}[/]")


@models_app.command()
def rollback() -> None:
    """Return to the previous champion."""
    console.print(f"champion: [bold]{registry.rollback(store())}[/]")
