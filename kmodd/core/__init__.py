"""Pure logic: bytes and text in, values out. Imports nothing outside the standard library."""
