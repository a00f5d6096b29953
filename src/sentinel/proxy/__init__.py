"""The HTTP data plane: listener protocol, router, builtin handlers (SPEC §3)."""
