"""Every `birthmark` command imports the whole CLI: it must not start torch or scikit-learn.

Importing them eagerly made `birthmark jobs status` take ~9 s on a 2-core host (torch ~3 s,
torchvision ~2.5 s, scikit-learn and scipy ~1.5 s); a worker still loads them as it starts.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO

HEAVY = ("torch", "torchvision", "sklearn", "scipy", "pandas")


def _loaded_after(code: str) -> dict[str, bool]:
    probe = (
        f"{code}\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_cli_imports_no_heavy_library():
    # workers.submit: what `birthmark score` runs to queue a job (the plan task goes by name);
    # workers.tasks.sweep: `birthmark jobs sweep` (it queues lost work by name too);
    # workers.watcher: `birthmark score --watch` (its passes run in the CLI's process).
    loaded = _loaded_after(
        "import workers.cli\nimport workers.submit\nimport workers.tasks.sweep\n"
        "import workers.watcher"
    )
    assert loaded == dict.fromkeys(HEAVY, False)


def test_a_review_thumbnail_needs_no_torch():
    code = (
        "import io\nfrom PIL import Image\nimport models\n"
        "buf = io.BytesIO(); Image.new('RGB', (640, 480), (200, 120, 90)).save(buf, 'JPEG')\n"
        "thumb = models.decode_image(buf.getvalue(), target=96, resize_with_torch=False)\n"
        "assert thumb.image.size == (128, 96)"
    )
    loaded = _loaded_after(code)
    assert not loaded["torch"] and not loaded["sklearn"]


def test_a_worker_loads_the_libraries_as_it_starts():
    code = (
        "from celery.signals import worker_init\nimport workers.app\nworker_init.send(sender=None)"
    )
    loaded = _loaded_after(code)
    assert loaded["torch"] and loaded["torchvision"] and loaded["sklearn"]
