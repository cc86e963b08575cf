"""Put on ``PYTHONPATH`` by ``test_decoder_crash.py`` for the worker it starts, and only there.

Python imports ``sitecustomize`` at start-up, so in that worker and in every process it starts, the
JPEG decoder segfaults its process on a file carrying ``MARKER`` (the crafted-file decoder crash
that Python cannot catch) and never returns on one carrying ``HANG_MARKER``.
"""

import os
import signal
import time

from PIL import JpegImagePlugin

MARKER = b"birthmark-test: this file crashes the decoder"
HANG_MARKER = b"birthmark-test: this file hangs the decoder"

_open = JpegImagePlugin.JpegImageFile._open


def _crashing_open(self) -> None:
    start = self.fp.tell()
    head = self.fp.read(4096)
    self.fp.seek(start)
    if MARKER in head:
        os.kill(os.getpid(), signal.SIGSEGV)
    while HANG_MARKER in head:
        time.sleep(60)
    _open(self)


JpegImagePlugin.JpegImageFile._open = _crashing_open
