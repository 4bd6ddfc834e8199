"""Write the fuzz targets' seed inputs: ``python -m tests.fuzz.make_seeds OUTDIR``."""

from __future__ import annotations

import sys

from tests.fuzz.fuzzlib import write_seeds

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.fuzz.make_seeds OUTDIR")
    write_seeds(sys.argv[1])
