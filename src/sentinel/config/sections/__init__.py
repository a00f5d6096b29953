"""One reader per top-level configuration block."""
