"""The one settings object: ``BIRTHMARK_*`` environment variables and an optional ``.env`` file.

No other module reads ``os.environ`` for configuration.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PROMOTION_METRICS", "Settings", "get_settings"]

# What promotion may compare (metrics of models.evaluate where higher is better): a lower-is-better
# one such as ECE would promote worse models, a misspelt one none at all (NaN never wins).
PROMOTION_METRICS = (
    "roc_auc",
    "balanced_accuracy",
    "sens_at_spec_90",
    "sens_at_spec_95",
    "pauc_above_80_tpr",
)


class Settings(BaseSettings):
    """Runtime configuration. Every field maps to ``BIRTHMARK_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(
        env_prefix="BIRTHMARK_", env_file=".env", extra="ignore", frozen=True
    )

    # --- services -------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="Broker and job state. Unset: an embedded loopback redis-server is started.",
    )
    store: str = Field(
        default="./birthmark-data",
        description="Object store: s3://bucket[/prefix] or a local folder.",
    )
    s3_endpoint_url: str | None = Field(default=None, description="S3 API endpoint (MinIO, moto).")
    s3_region: str = "us-east-1"
    home: Path = Field(
        default=Path.home() / ".cache" / "birthmark",
        description="Embedded redis data, service PIDs and logs, decoded-image cache.",
    )
    device: str = Field(default="auto", description="auto | cpu | cuda")
    isic_api_url: str | None = Field(
        default=None, description="ISIC API base URL; unset means the real archive."
    )

    # --- scoring --------------------------------------------------------------------------
    score_batch_size: int = Field(default=32, ge=1, le=1024)
    score_prefixes: str = Field(
        default="uploads/",
        description="Comma-separated store prefixes that scoring jobs may read.",
    )
    max_upload_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(default=120_000_000, ge=1)
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    score_prefetch_threads: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Fetch/decode threads per score worker. Enough that some decode while others "
        "wait on the store: on 2 cores, queued scoring of 4000x3000 photos ran 0.90-0.94 of the "
        "bare path's rate with 8 where 6 ran 0.84-0.90 (5 pairs), and 4 ran 0.82 against 6's 0.85.",
    )
    watch_prefix: str = "uploads/"
    watch_interval_s: float = Field(default=30.0, gt=0)
    upload_events_key: str | None = Field(
        default=None,
        description="Redis list the object store pushes bucket events to (MinIO: "
        "MINIO_NOTIFY_REDIS_KEY_<ID>, format access, database 0). Set: a pass of the watch_prefix "
        "watcher takes new uploads from it instead of listing the prefix, which it then lists only "
        "every watch_list_interval_s, for uploads whose event was lost.",
    )
    upload_events_queue_url: str | None = Field(
        default=None,
        description="SQS queue URL that Amazon S3 sends the bucket's s3:ObjectCreated:* "
        "notifications to: the same as upload_events_key, for a store on AWS (not both).",
    )
    watch_list_interval_s: float = Field(
        default=600.0,
        gt=0,
        description="With upload_events_key set, how often a watcher pass also lists the prefix.",
    )
    compile_model: bool = Field(default=False, description="torch.compile the scoring model.")
    score_torchscript: bool = Field(
        default=True,
        description="Score with a traced, frozen TorchScript copy of the model (eager if the trace "
        "fails its check): it takes the GIL once per forward pass instead of once per op, so the "
        "fetch threads' Python does not stall it. Ignored when compile_model is on.",
    )
    score_torch_threads: int = Field(
        default=0,
        ge=0,
        le=256,
        description="torch intra-op threads per score worker; 0 = auto: every CPU the worker may "
        "use but one while images are being fetched, which is left to the fetch/decode threads, "
        "and every CPU for a chunk when they need none (nothing more announced, or a whole chunk "
        "waiting). A count set here is used throughout.",
    )

    score_inference_streams: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Inference threads per score worker, each scoring its own chunks with the "
        "worker's cores shared out between them (one torch thread each on 2 cores). On 2 cores, 2 "
        "scored 1024x768 photos 12% faster queued and 23% faster in process (medians of 6 paired "
        "stacks), so the e2e ratio falls; 1 keeps one thread whose count follows the fetch "
        "threads' need.",
    )

    score_decode_hang_s: float = Field(
        default=300.0,
        gt=0,
        description="An image not fetched and decoded this long after the batch waits for it "
        "counts as a hung decoder: the batch is retried with each image decoded in a child "
        "process, killed after as long. Above the S3 client's retries (4 x 30 s read timeout).",
    )
    curation_decode_hang_s: float = Field(
        default=300.0,
        gt=0,
        description="The same bound for a curation job's images: past it the job is retried with "
        "each image decoded in a child process, and an image that hangs there is unreadable.",
    )
    score_fetch_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="How many steps nicer (lower CPU priority) than the worker its fetch/decode "
        "threads run (Linux; 0 = same priority). The inference thread then gets a core whenever "
        "it is runnable: queued scoring +3-4% img/s, the bare path on 4000x3000 photos +18%.",
    )
    score_gil_switch_ms: float = Field(
        default=0.5,
        ge=0.0,
        le=100.0,
        description="Python's thread switch interval in a score worker, in ms; 0 leaves Python's "
        "5 ms. The inference thread needs the GIL between torch ops, and the fetch threads' "
        "boto3 code holds it for up to this long each time; at 0.5 ms a 32-image batch task "
        "took ~0.95 s instead of ~1.15 s.",
    )

    @property
    def score_torch_thread_count(self) -> int:
        from models.cpus import available_cpus  # here: importing models starts torch

        return self.score_torch_threads or max(1, available_cpus() - 1)

    # --- curation -------------------------------------------------------------------------
    curation_query: str = Field(default="", description="isic-cli --search for the daily pull.")
    curation_limit: int = Field(default=500, ge=1)
    curation_collections: str | None = None
    curation_cron: str = Field(default="0 3 * * *", description="crontab for the daily pull.")
    allowed_licences: str = "CC-0,CC-BY"
    phone_accept: float | None = Field(default=None, description="Override: accept at >= this.")
    phone_reject: float | None = Field(default=None, description="Override: reject at <= this.")
    duplicate_max_distance: int = Field(default=6, ge=0, le=64)
    isic_timeout_s: float = Field(default=1800.0, gt=0)

    # --- training -------------------------------------------------------------------------
    train_cron: str = Field(default="0 4 * * 0", description="crontab for weekly retraining.")
    train_growth_fraction: float = Field(default=0.2, ge=0.0)
    train_epochs: int = Field(default=80, ge=1)
    train_image_size: int = Field(default=112, ge=32)
    train_time_budget_min: float = Field(
        default=27.0,
        gt=0,
        description="Minutes for a run's epochs: after the first epoch, and again after the "
        "second, a run that would not fit at that pace is shortened, and later an epoch that "
        "would end past the budget is not started (models.TrainConfig.time_budget_s); cache and "
        "evaluation come on top (~1-2 min).",
    )
    train_progressive_scales: tuple[float, ...] = Field(
        default=(0.72, 0.86),
        description="Progressive resizing: the learning-rate phases before the last train at these "
        "fractions of the image size, as JSON (models.TrainConfig.progressive_scales); [] = off.",
    )
    train_val_every: int = Field(
        default=5,
        ge=1,
        description="Per-epoch val pass (and its batch-norm re-estimation) after the first epoch, "
        "every Nth and the last (models.TrainConfig.val_every); monitoring only, ~11% of an epoch.",
    )
    train_checkpoint_interval_s: float = Field(
        default=120.0,
        ge=0,
        description="A training run writes its resume checkpoint (~80 MB) after the first epoch, "
        "the last, and any epoch this many seconds after the previous write; 0 = every epoch.",
    )
    train_arch: str = "resnet10_multimodal"
    train_test_time_flips: bool = Field(
        default=True,
        description="Models score the mean logit over an image and its three flips (4x inference), "
        "calibrated that way on val (models.TrainConfig.test_time_flips); the card records it.",
    )
    promotion_metric: Literal[PROMOTION_METRICS] = "roc_auc"
    promotion_margin: float = 0.0

    # --- celery reliability ---------------------------------------------------------------
    score_time_limit_s: int = Field(default=900, ge=1)
    curation_time_limit_s: int = Field(default=4 * 3600, ge=1)
    # Also the TTL of the training lock (a Redis EXPIRE): 0 or less fails inside every run.
    train_time_limit_s: int = Field(default=6 * 3600, ge=1)
    visibility_timeout_s: int = Field(default=7 * 3600, ge=1)
    result_expires_s: int = Field(default=24 * 3600, ge=1)
    sweep_interval_s: float = Field(
        default=120.0,
        ge=0,
        description="Workers sweep in turn, one sweep per this interval across them all: the "
        "tasks of dead workers and work the broker lost (a message popped by a worker that "
        "died before recording it) are queued again; 0 = no automatic sweep.",
    )
    sweep_min_age_s: float = Field(
        default=60.0,
        ge=0,
        description="The sweep leaves alone jobs queued less than this long ago (a submitter "
        "records a job, then queues its plan).",
    )
    worker_alive_ttl_s: float = Field(
        default=45.0,
        ge=1,
        description="A worker refreshes its alive key in Redis every quarter of this; once it "
        "has not for this long, the sweep puts the tasks it held back on their queues.",
    )

    # --- credentials (never logged) -------------------------------------------------------
    redis_password: SecretStr | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        # As models.resolve_device accepts, checked here so a typo stops the worker at startup
        # instead of failing every scoring batch and training run.
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")

    @field_validator("curation_cron", "train_cron")
    @classmethod
    def _five_field_crontab(cls, value: str) -> str:
        # Read by beat only when it starts (workers.app); checked here so that a bad schedule is
        # named at startup, not reported as "not enough values to unpack" from inside celery.
        from celery.schedules import crontab

        fields = value.split()
        if len(fields) != 5:
            raise ValueError(
                "expected a crontab of 5 fields (minute hour day-of-month month day-of-week), "
                f"got {value!r}"
            )
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        try:
            crontab(minute, hour, day_of_week, day_of_month, month_of_year)
        except ValueError as err:
            raise ValueError(f"invalid crontab {value!r}: {err}") from None
        return value

    @model_validator(mode="after")
    def _one_upload_event_source(self) -> Settings:
        if self.upload_events_key and self.upload_events_queue_url:
            raise ValueError(
                "set BIRTHMARK_UPLOAD_EVENTS_KEY (a Redis list, MinIO) or "
                "BIRTHMARK_UPLOAD_EVENTS_QUEUE_URL (an SQS queue, Amazon S3), not both"
            )
        return self

    @property
    def score_prefix_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.score_prefixes.split(",") if p.strip())

    @property
    def allowed_licence_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.allowed_licences.split(",") if p.strip())

    @property
    def is_embedded_redis(self) -> bool:
        return not self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
