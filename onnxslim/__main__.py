"""``python -m onnxslim`` (and ``torchrun -m onnxslim``): the ``onnxslim`` command."""

import sys

from onnxslim.cli import main

if __name__ == "__main__":
    sys.exit(main())
