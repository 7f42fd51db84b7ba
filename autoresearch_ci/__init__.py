"""autoresearch-ci: the research loop around the locked harness (config, ledger, baselines, verdict,
guard, budget; the steps, proposers, forges, runners and report; the CLI)."""

__version__ = "0.1.0"
