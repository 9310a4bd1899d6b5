"""healer: a self-healing post-launch watchdog."""

__version__ = "0.1.0"
