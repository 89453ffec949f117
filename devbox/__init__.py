"""devbox: per-project development environments on its own container engine."""

__version__ = "0.1.0"
