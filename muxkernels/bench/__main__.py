"""``python -m muxkernels.bench``: the same as ``muxkernels bench``."""

import sys

from .cli import main

sys.exit(main())
