"""``python -m dsbuild``: the ``dsbuild`` command where its script is not on the PATH
(a virtual environment not activated, a notebook's ``!python -m``)."""

import sys

from dsbuild.cli import main

if __name__ == "__main__":
    sys.exit(main())
