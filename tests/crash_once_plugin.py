"""A Pillow plugin whose decoder kills its process the first time (a decoder segfault, say).

Files starting with b"CRASHONCE" are 64x64 RGB by their header. The first load() anywhere
creates the marker file named by $EMBEDLAKE_TEST_CRASH_MARKER and exits the process at once;
later loads raise OSError, so the file ends as an error row.
"""

import os
from pathlib import Path

from PIL import Image, ImageFile


class CrashOnceImageFile(ImageFile.ImageFile):
    format = "CRASHONCE"
    format_description = "an image whose decoder crashes its process once"

    def _open(self):
        self._size = (64, 64)
        self._mode = "RGB"

    def load(self):
        marker = Path(os.environ["EMBEDLAKE_TEST_CRASH_MARKER"])
        if not marker.exists():
            marker.touch()
            os._exit(1)
        raise OSError("this decoder crashed before; the file is broken")


Image.register_open("CRASHONCE", CrashOnceImageFile, lambda prefix: prefix[:9] == b"CRASHONCE")
