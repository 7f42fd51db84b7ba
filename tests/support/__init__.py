"""Test helpers shared by several test modules (fakes of external services, repo builders)."""
