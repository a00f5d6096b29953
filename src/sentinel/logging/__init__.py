"""Logs (SPEC §7): the application log of every process and the access log the supervisor writes."""
