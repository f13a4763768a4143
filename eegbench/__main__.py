"""``python -m eegbench`` (so ``torchrun -m eegbench`` / ``accelerate launch -m eegbench`` work)."""

import sys

from eegbench.cli import main

sys.exit(main())
