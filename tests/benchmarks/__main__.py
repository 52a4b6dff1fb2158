"""``python -m tests.benchmarks``: the performance suite (see ``tests.benchmarks.suite``)."""

import sys

from tests.benchmarks.suite import main

sys.exit(main())
