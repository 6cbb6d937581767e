"""reclaim: a garbage collector for container hosts."""

__version__ = "0.1.0"
