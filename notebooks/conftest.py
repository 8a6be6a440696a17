"""nbval runs each notebook in a kernel that inherits this environment: the test size."""

import os

from rulelib.notebook import SIZE_VARIABLE

os.environ.setdefault(SIZE_VARIABLE, "test")
