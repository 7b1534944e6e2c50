"""kmodd: a kernel-module autoloader daemon and kmod-compatible tools."""

__version__ = "0.1.0"
