"""The vectorised implementations of the expression language's functions, for evaluating formulas in numpy."""

import numpy as np

NUMPY_FUNCTIONS = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "max": np.maximum, "min": np.minimum,
                   "pow": np.power}
