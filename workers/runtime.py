"""Per-process handles from settings: the Redis URL (embedded if unset), Redis client, store."""

from __future__ import annotations

import threading
from functools import lru_cache
from urllib.parse import quote, urlparse, urlunparse

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from workers.embedded import embedded_redis_url, ensure_redis
from workers.settings import Settings, get_settings
from workers.store import S3Store, Store, open_store

__all__ = ["redis_url", "redis_client", "store", "redact_url"]


def _with_password(url: str, settings: Settings) -> str:
    """``url`` with BIRTHMARK_REDIS_PASSWORD in it, unless the URL already carries a password.

    An ACL user name in the URL is kept; the password is percent-encoded (redis-py decodes it), so
    ``@``, ``/`` or ``:`` in it cannot change where the URL points.
    """
    if settings.redis_password is None:
        return url
    parsed = urlparse(url)
    if parsed.password:
        return url
    password = quote(settings.redis_password.get_secret_value(), safe="")
    host = parsed.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{parsed.username or ''}:{password}@{host}"
    if parsed.port:
        netloc += f":{parsed.port}"
    return urlunparse(parsed._replace(netloc=netloc))


@lru_cache(maxsize=1)
def redis_url() -> str:
    """The broker/state URL: BIRTHMARK_REDIS_URL, else the embedded loopback server."""
    settings = get_settings()
    url = settings.redis_url or ensure_redis(settings.home)
    return _with_password(url, settings)


def running_redis_url() -> str | None:
    """Like ``redis_url`` but never starts the embedded server: None when it is not running."""
    settings = get_settings()
    url = settings.redis_url or embedded_redis_url(settings.home)
    return _with_password(url, settings) if url else None


def redact_url(url: str) -> str:
    """The URL without credentials, for logs and status output."""
    parsed = urlparse(url)
    if not parsed.password and not parsed.username:
        return url
    host = parsed.hostname or ""
    if parsed.port:
        host += f":{parsed.port}"
    return urlunparse(parsed._replace(netloc=f"***@{host}"))


# Job bookkeeping rides out a Redis restart (about 30 s) instead of failing the task: a task that
# fails here cannot retry either, because Celery's retry must publish to the same Redis.
_REDIS_RETRY = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=18)


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(
        redis_url(),
        decode_responses=True,
        socket_timeout=10,
        health_check_interval=30,
        retry=_REDIS_RETRY,
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


# boto3's default session, which makes the S3 client, is not thread-safe: a worker's sweep thread
# and its first task may both open the store at once.
_store_lock = threading.Lock()


@lru_cache(maxsize=1)
def store() -> Store:
    settings = get_settings()
    with _store_lock:
        s = open_store(
            settings.store, endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
        )
        if isinstance(s, S3Store) and settings.s3_endpoint_url:
            # MinIO/moto: make the bucket on first use; on AWS it is provisioned separately.
            s.ensure_bucket()
    return s
