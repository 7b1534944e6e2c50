"""kmodd: a kernel-module autoloader daemon and kmod-compatible tools."""

__version__ = "0.2.0"
