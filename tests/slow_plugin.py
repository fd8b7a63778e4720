"""A Pillow plugin whose decoder hangs: stands in for a file that hangs a real decoder.

Registered by importing this module (`--pillow-plugin tests.slow_plugin`); it claims files that
start with b"SLOWIMG1", reports a 64x64 RGB header, and sleeps for ever in load().
"""

import time

from PIL import Image, ImageFile


class SlowImageFile(ImageFile.ImageFile):
    format = "SLOW"
    format_description = "an image whose decoder never returns"

    def _open(self):
        self._size = (64, 64)
        self._mode = "RGB"

    def load(self):
        time.sleep(3600)


Image.register_open("SLOW", SlowImageFile, lambda prefix: prefix[:8] == b"SLOWIMG1")
Image.register_extension("SLOW", ".slow")
