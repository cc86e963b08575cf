"""`birthmark review`: accept/reject borderline images fast, from any terminal."""

from __future__ import annotations

import getpass
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import typer
from rich.columns import Columns
from rich.panel import Panel

import curation
import models
from workers.cli._common import console, print_json, table
from workers.runtime import store

# workers.reviewing (pandas, the curated manifests) is imported by the commands that read the
# queue: every `birthmark` command imports this module.
app = typer.Typer(
    help="Review borderline (needs_review) images. No sub-command: the interactive reviewer.",
    invoke_without_command=True,
)

# Escaped: rich would read "[a]" as markup and print "ccept  eject ...".
KEYS_HELP = r"\[a]ccept  \[r]eject  \[u]ndo  \[s]kip  \[o]pen  \[q]uit"


def _reviewer(value: str | None) -> str:
    return value or os.environ.get("USER") or getpass.getuser()


class _Keys:
    """Keypresses, one per ``read()``: a whole terminal session, or one key per line otherwise.

    On a terminal, cbreak mode is set once for the whole session, not per key: switching per
    key flushed (TCSAFLUSH) whatever was typed while the next image was drawn, so a fast
    reviewer's next key fell on the wrong image. Escape sequences (arrows, function keys) are
    read whole and ignored: the ``A`` that ends an up-arrow (ESC [ A) used to accept the image.
    """

    def __init__(self, fd: int | None = None) -> None:
        if fd is None:  # a test runner's stdin may have no descriptor: not a terminal then
            self._tty = sys.stdin.isatty()
            self._fd = sys.stdin.fileno() if self._tty else -1
        else:
            self._fd, self._tty = fd, os.isatty(fd)
        self._pending = b""
        self._saved: list | None = None

    def __enter__(self) -> _Keys:
        if self._tty:
            import termios
            import tty

            self._saved = termios.tcgetattr(self._fd)
            tty.setcbreak(self._fd, termios.TCSANOW)  # TCSANOW: keep what was typed ahead
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def read(self) -> str:
        """The next key, lower-cased; "" for an ignored key or sequence; "q" at end of input."""
        if not self._tty:
            line = sys.stdin.readline()
            return line.strip()[:1].lower() if line else "q"
        if not self._pending:
            self._pending = os.read(self._fd, 64)
            if not self._pending:
                return "q"
        if self._pending[:1] == b"\x1b":
            self._skip_escape()
            return ""
        key, self._pending = self._pending[:1], self._pending[1:]
        return key.decode("ascii", errors="replace").lower() if key.isascii() else ""

    def _skip_escape(self) -> None:
        """Drop one escape sequence (ESC [ ... final, ESC O x, ESC x, or a lone ESC)."""
        import select

        def more() -> bool:  # the rest of a sequence arrives at once or within a few ms
            if not select.select([self._fd], [], [], 0.05)[0]:
                return False
            data = os.read(self._fd, 64)
            self._pending += data
            return bool(data)

        if len(self._pending) < 2 and not more():
            self._pending = b""
            return
        introducer = self._pending[1:2]
        if introducer == b"O":
            if len(self._pending) < 3:
                more()
            self._pending = self._pending[3:]
            return
        if introducer != b"[":
            self._pending = self._pending[2:]  # ESC + key (Alt-key): ignored as a whole
            return
        i = 2
        while True:
            while i < len(self._pending):
                if 0x40 <= self._pending[i] <= 0x7E:  # the final byte of a CSI sequence
                    self._pending = self._pending[i + 1 :]
                    return
                i += 1
            if not more():
                self._pending = b""
                return


def _open_in_viewer(data: bytes, name: str) -> None:
    path = Path(tempfile.gettempdir()) / f"birthmark-review-{name}"
    path.write_bytes(data)
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        subprocess.Popen([opener, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except FileNotFoundError:
        console.print(f"no system viewer ({opener}); the image is at {path}")


def _show(item: dict, image_bytes: bytes | None, remaining: int, total: int) -> None:
    console.clear()
    if image_bytes is not None:
        try:
            img = models.decode_image(image_bytes, target=96, resize_with_torch=False).image
            preview = curation.render_halfblocks(img, width=min(64, console.width // 2))
        except models.ImageError as err:
            preview = f"(cannot preview: {err})"
    else:
        preview = "(image missing)"
    fields = [
        ["image", item["isic_id"]],
        ["phone score", f"{item.get('phone_score', float('nan')):.3f}"],
        ["verdict", item.get("phone_verdict")],
        ["diagnosis", item.get("diagnosis")],
        ["image_type", item.get("image_type")],
        [
            "age / sex / site",
            f"{item.get('age_approx')} / {item.get('sex')} / {item.get('anatom_site_general')}",
        ],
        ["licence", item.get("copyright_license")],
        ["pull", item.get("pull_id")],
    ]
    reasons = "\n".join(f"- {r}" for r in str(item.get("phone_reasons") or "").split("; ") if r)
    info = table(None, ["", ""], fields)
    console.print(Columns([Panel(preview, title="preview"), info]))
    console.print(Panel(reasons or "(no reasons)", title="why it is borderline"))
    console.print(f"[bold]{remaining}[/] of {total} left   {KEYS_HELP}")


@app.callback()
def interactive(
    ctx: typer.Context,
    pull: str | None = typer.Option(None, help="Only images of this pull"),
    min_score: float | None = typer.Option(None, min=0.0, max=1.0),
    max_score: float | None = typer.Option(None, min=0.0, max=1.0),
    diagnosis: str | None = typer.Option(None, help="Only this diagnosis (case-insensitive)"),
    reviewer: str | None = typer.Option(None, help="Recorded with each decision (default: $USER)"),
) -> None:
    """Review needs_review images one by one; each decision is saved the moment it is made."""
    if ctx.invoked_subcommand is not None:
        return
    from workers.reviewing import load_queue, save_decision

    st = store()
    _, queue, _ = load_queue(
        st, pull=pull, min_score=min_score, max_score=max_score, diagnosis=diagnosis
    )
    if queue.empty:
        console.print("nothing to review")
        return
    session = curation.ReviewSession(queue, reviewer=_reviewer(reviewer))
    counts = {"accept": 0, "reject": 0, "undo": 0}
    with _Keys() as keys:
        while not session.done:
            item = dict(session.current)
            data = (
                st.get(item["key"])
                if isinstance(item.get("key"), str) and st.exists(item["key"])
                else None
            )
            _show(item, data, session.remaining, session.total)
            key = keys.read()
            if key == "o":
                if data is not None:
                    _open_in_viewer(data, f"{item['isic_id']}.jpg")
                continue
            try:
                decision = session.handle(key)
            except ValueError:
                continue  # unknown key: show the same image again
            if decision is not None:
                save_decision(st, decision)
                counts[decision.decision] += 1
    left = session.total - session.position  # after q, session.remaining is 0: not what is left
    console.print(
        f"session over: {counts['accept']} accepted, {counts['reject']} rejected, "
        f"{counts['undo']} undone; {left} left. Run `birthmark curate run` to apply."
    )


@app.command("list")
def list_(
    pull: str | None = typer.Option(None),
    min_score: float | None = typer.Option(None),
    max_score: float | None = typer.Option(None),
    diagnosis: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Images waiting for review, most uncertain first."""
    from workers.reviewing import load_queue

    version, queue, _ = load_queue(
        store(), pull=pull, min_score=min_score, max_score=max_score, diagnosis=diagnosis
    )
    cols = ["isic_id", "phone_score", "phone_verdict", "diagnosis", "pull_id", "phone_reasons"]
    if as_json:
        print_json(queue[[c for c in cols if c in queue]].to_dict("records"))
        return
    rows = queue[[c for c in cols if c in queue]].astype(str).values.tolist()
    console.print(table(f"to review in {version}: {len(queue)}", cols, rows))


def _decide(ids: list[str], decision: str, reason: str, reviewer: str | None) -> None:
    from workers.reviewing import known_ids, save_decision

    st = store()
    known = known_ids(st)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise typer.BadParameter(f"not in the latest curated version: {', '.join(unknown)}")
    for isic_id in ids:
        save_decision(
            st,
            curation.Decision(
                isic_id=isic_id, decision=decision, reviewer=_reviewer(reviewer), reason=reason
            ),
        )
    console.print(
        f"{decision}ed {len(ids)} image(s); `birthmark curate run` applies them to a new version"
    )


@app.command()
def accept(
    ids: list[str], reason: str = typer.Option(""), reviewer: str | None = typer.Option(None)
) -> None:
    """Accept images as phone-like (overrides the automatic verdict in the next version)."""
    _decide(ids, "accept", reason, reviewer)


@app.command()
def reject(
    ids: list[str], reason: str = typer.Option(""), reviewer: str | None = typer.Option(None)
) -> None:
    """Reject images (not phone-like)."""
    _decide(ids, "reject", reason, reviewer)


@app.command()
def undo(reviewer: str | None = typer.Option(None), reason: str = typer.Option("")) -> None:
    """Take back your latest live decision."""
    from workers.curating import load_decisions
    from workers.reviewing import live_decision_for, save_decision

    st = store()
    last = live_decision_for(load_decisions(st), _reviewer(reviewer))
    if last is None:
        console.print("no decision of yours to undo")
        raise typer.Exit(1)
    save_decision(
        st,
        curation.Decision(
            isic_id=last.isic_id,
            decision="undo",
            reviewer=_reviewer(reviewer),
            reason=reason,
            undoes=last.decision_id,
        ),
    )
    console.print(f"undid {last.decision} of {last.isic_id}")


@app.command()
def sheet(
    out: Path = typer.Option(..., help="HTML file to write"),
    all_images: bool = typer.Option(False, "--all", help="Every image, not just the review queue"),
    limit: int = typer.Option(500, min=1, help="At most this many thumbnails"),
) -> None:
    """An HTML contact sheet (thumbnails, scores, reasons, verdicts), filterable in the browser."""
    from workers.reviewing import load_queue
    from workers.training_run import load_manifest

    st = store()
    if all_images:
        version, df = load_manifest(st)
    else:
        version, df, _ = load_queue(st)
    df = df.head(limit)
    thumbs = {}
    for rec in df.to_dict("records"):
        key = rec.get("key")
        if isinstance(key, str) and st.exists(key):
            try:
                img = models.decode_image(st.get(key), target=128, resize_with_torch=False).image
            except models.ImageError:
                continue
            img.thumbnail((160, 160))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=80)
            thumbs[rec["isic_id"]] = buf.getvalue()
    out.write_text(
        curation.render_contact_sheet(df, thumbs, title=f"birthmark {version}"), encoding="utf-8"
    )
    console.print(f"{len(df)} images -> {out}")
