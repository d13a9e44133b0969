"""Shared fixtures live in deployhq_lite.testing.plugin (loaded as a pytest plugin)."""
