"""The built-in trace viewer (SPEC §9): OTLP receivers, a SQLite store, a web UI and the Jaeger query API."""
