"""``python -m tests.golden [PATH]`` (``make golden``): compile the golden pipeline to PATH, by default
``tests/golden/gan_pipeline.yaml``."""

import sys
from pathlib import Path

from tests.golden import GOLDEN, write

print(f"wrote {write(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN)}")
