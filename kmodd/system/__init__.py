"""Every real edge of the system: files, sockets, syscalls. One file per surface."""
