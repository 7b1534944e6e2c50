"""Command-line front ends: kmodctl and the kmod-compatible tools."""
