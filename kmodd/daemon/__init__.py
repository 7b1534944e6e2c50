"""The asyncio daemon: intake, loading, control socket."""
