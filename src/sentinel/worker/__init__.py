"""A worker process: serves traffic on the listening sockets the supervisor hands it (SPEC §1, §11)."""
