"""Drive the real isic-cli as a subprocess to pull images and metadata from an ISIC archive.

isic-cli 12.4 has no base-URL option and hides failed image downloads (exit 0), so this module
runs it through a tiny launcher (`python -c`) that points its `dev` domain at `api_url`, turns off
its Sentry setup, and then checks that every metadata row has its image file.
See shared/notes/isic-cli.md for the behaviour this relies on.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from os import PathLike
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from curation._images import unreadable_reason
from curation.metadata import read_isic_metadata

__all__ = ["IsicCliError", "IsicDownload", "download_images", "isic_cli_version"]

_STOP_POLL_S = 0.5  # how often a download asks its should_stop

# Files isic-cli writes next to the images; everything else named <isic_id>.<ext> is an image.
_NON_IMAGE_FILES = frozenset({"metadata.csv", "attribution.txt"})
_STDERR_TAIL_CHARS = 4000
_COLLECTION_ID = re.compile(r"^\d+$")
# stderr lines isic-cli always prints; they never explain a failure.
_NOISE = ("Disabling the version check", "If you have been granted special permissions")
_ERROR_LINE = re.compile(r"^(Error: |[\w.]*(Error|Exception)\b)")

# argv: [-c, api_url or "", isic args...]. Setting DOMAINS["dev"] works because isic-cli reads the
# dict at call time. Sentry setup is disabled so automated runs never report anything, and
# is_dev_install() => True makes main() skip its interactive bug-report prompt; main() then only
# returns (instead of sys.exit) after it has printed an unexpected error, hence exit 1.
_LAUNCHER = """\
import sys
import isic_cli.cli as cli
cli._sentry_setup = lambda: None
cli.is_dev_install = lambda: True
if sys.argv[1]:
    cli.DOMAINS["dev"] = sys.argv[1]
sys.argv = ["isic", *sys.argv[2:]]
cli.main()
sys.exit(1)
"""


class IsicCliError(RuntimeError):
    """isic-cli failed (non-zero exit, timeout, or stopped on request: `returncode` None for the
    last two); `stderr_tail` holds the end of its stderr."""

    def __init__(self, message: str, returncode: int | None, stderr_tail: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


@dataclass(frozen=True)
class IsicDownload:
    outdir: Path
    metadata: pd.DataFrame
    images: dict[str, Path]
    missing: list[str]
    isic_cli_version: str
    command: list[str]
    stderr_tail: str = ""
    licence_files: dict[str, Path] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # isic_id -> reason


def isic_cli_version() -> str:
    """Version of the isic-cli installed next to this interpreter (the one that will be run)."""
    return importlib_metadata.version("isic-cli")


def build_command(
    outdir: str | PathLike[str],
    *,
    search: str = "",
    limit: int = 100,
    collections: Sequence[int | str] | None = None,
    api_url: str | None = None,
) -> list[str]:
    """The argv that runs isic-cli's `image download` against `api_url` (None: the real archive)."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0 (0 = everything), got {limit}")
    args = [sys.executable, "-c", _LAUNCHER, _normalise_api_url(api_url) if api_url else ""]
    if api_url:
        args.append("--dev")
    args += ["--no-version-check", "--guest", "image", "download", "--limit", str(limit)]
    if search:
        args += ["--search", search]
    if collections:
        ids = [str(c).strip() for c in collections]
        bad = [c for c in ids if not _COLLECTION_ID.match(c)]
        if bad:
            raise ValueError(f"collection ids must be integers, got {bad}")
        args += ["--collections", ",".join(ids)]
    args.append(str(outdir))
    return args


def download_images(
    outdir: str | PathLike[str],
    *,
    search: str = "",
    limit: int = 100,
    collections: Sequence[int | str] | None = None,
    api_url: str | None = None,
    timeout: float = 600.0,
    check_images: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> IsicDownload:
    """Download images + metadata.csv + attribution.txt + licenses/ into `outdir` with isic-cli.

    `limit=0` downloads everything that matches. Images that isic-cli failed to fetch (it still
    exits 0) are listed in `missing`; with `check_images`, files that do not decode (e.g. truncated)
    are listed in `unreadable`. Raises IsicCliError on a non-zero exit, a timeout, or when
    `should_stop` (asked every half second, and before each image's check) answers true:
    isic-cli is killed in the last two.
    """
    outdir = Path(outdir)
    command = build_command(
        outdir, search=search, limit=limit, collections=collections, api_url=api_url
    )
    with tempfile.TemporaryDirectory(prefix="birthmark-isic-") as data_home:
        returncode, stderr = _run(
            command, env=_isic_env(data_home), timeout=timeout, should_stop=should_stop
        )
    tail = _tail(stderr)
    if returncode != 0:
        raise IsicCliError(
            f"isic-cli exited with code {returncode}: {_excerpt(tail)}", returncode, tail
        )
    metadata_path = outdir / "metadata.csv"
    if not metadata_path.is_file():
        raise IsicCliError(
            f"isic-cli exited 0 but wrote no {metadata_path}: {_excerpt(tail)}", 0, tail
        )
    meta = read_isic_metadata(metadata_path)
    images, missing = find_image_files(outdir, meta["isic_id"])
    licences = {p.stem: p for p in sorted((outdir / "licenses").glob("*.txt"))}
    unreadable: dict[str, str] = {}
    if check_images:
        for isic_id, path in images.items():
            if should_stop is not None and should_stop():
                raise IsicCliError("the download's image check was stopped on request", None, "")
            reason = unreadable_reason(path)
            if reason is not None:
                unreadable[isic_id] = reason
    return IsicDownload(
        outdir=outdir,
        metadata=meta,
        images=images,
        missing=missing,
        isic_cli_version=isic_cli_version(),
        command=command,
        stderr_tail=tail,
        licence_files=licences,
        unreadable=unreadable,
    )


def _run(
    command: list[str],
    *,
    env: dict[str, str],
    timeout: float,
    should_stop: Callable[[], bool] | None,
) -> tuple[int, str]:
    """isic-cli's exit code and stderr. Past `timeout`, once `should_stop` answers true, or on
    any error here, it is killed; IsicCliError is raised for the first two."""
    deadline = time.monotonic() + timeout
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,  # EOF aborts isic-cli's bug-report prompt: nothing sent
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
    ) as proc:
        try:
            while True:
                left = max(deadline - time.monotonic(), 0.0)
                try:
                    _, stderr = proc.communicate(
                        timeout=left if should_stop is None else min(left, _STOP_POLL_S)
                    )
                    return proc.returncode, stderr
                except subprocess.TimeoutExpired:
                    stopped = should_stop is not None and should_stop()
                    if stopped or time.monotonic() >= deadline:
                        break
        except BaseException:
            proc.kill()
            raise
        proc.kill()
        try:  # bounded: a child isic-cli left behind may hold the pipes open
            _, stderr = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr
    why = (
        "was stopped on request"
        if stopped
        else f"timed out after {timeout:g} s (it retries unreachable servers for minutes)"
    )
    tail = _tail(stderr)
    raise IsicCliError(f"isic-cli {why}; stderr ends with: {_excerpt(tail)}", None, tail)


def find_image_files(
    outdir: str | PathLike[str], isic_ids: Sequence[str] | pd.Series
) -> tuple[dict[str, Path], list[str]]:
    """Map ids to their non-empty `<isic_id>.<ext>` file in `outdir`; the rest are missing."""
    by_stem: dict[str, Path] = {}
    for path in sorted(Path(outdir).iterdir()):
        # .isic-partial.* are isic-cli's temp files from an interrupted download.
        if path.is_file() and not path.name.startswith(".") and path.name not in _NON_IMAGE_FILES:
            if path.stat().st_size > 0:
                by_stem.setdefault(path.stem, path)
    images: dict[str, Path] = {}
    missing: list[str] = []
    for isic_id in isic_ids:
        if isic_id in by_stem:
            images[isic_id] = by_stem[isic_id]
        else:
            missing.append(isic_id)
    return images, missing


def _normalise_api_url(api_url: str) -> str:
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"api_url must be an http(s) URL like http://127.0.0.1:8000, got {api_url!r}"
        )
    base = api_url.rstrip("/")
    # isic-cli appends /api/v2/ itself.
    return base.removesuffix("/api/v2")


def _isic_env(data_home: str) -> dict[str, str]:
    env = dict(os.environ)
    # A stray ISIC_DEV/ISIC_SANDBOX would silently redirect a production pull.
    env.pop("ISIC_DEV", None)
    env.pop("ISIC_SANDBOX", None)
    env["XDG_DATA_HOME"] = data_home  # no saved login token => anonymous, like --guest
    loopback = "127.0.0.1,localhost,::1"
    for name in ("NO_PROXY", "no_proxy"):
        env[name] = f"{env[name]},{loopback}" if env.get(name) else loopback
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _tail(text: str | bytes | None) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return text[-_STDERR_TAIL_CHARS:]


def _excerpt(tail: str, *, lines: int = 6) -> str:
    """The lines of stderr that say what went wrong (not the progress bar or the traceback)."""
    kept = [
        line.rstrip()
        for line in tail.splitlines()
        if line.strip() and not any(noise in line for noise in _NOISE)
    ]
    errors = [line for line in kept if _ERROR_LINE.search(line)]
    return "\n".join((errors or kept)[-lines:]) or "(no stderr)"
