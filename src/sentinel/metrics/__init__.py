"""Metrics (SPEC §8): recorded in the workers, added up and served by the supervisor."""
