"""Tracing: correlation ids, W3C Trace Context, sampling, span recording and export (SPEC §6)."""
