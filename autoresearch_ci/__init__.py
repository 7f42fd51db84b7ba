"""autoresearch-ci: the research loop around the locked harness (config, ledger, proposers, guard,
judge, forges, runners, learnings and the CLI)."""

__version__ = "0.1.0"
