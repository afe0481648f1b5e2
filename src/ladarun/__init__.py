"""ladarun: a config-driven runner for LADA and the deep active-learning baselines of its Table 1."""

__version__ = "0.1.0"
