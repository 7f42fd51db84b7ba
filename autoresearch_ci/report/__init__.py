"""Every text a person reads, rendered from ledger records in one room.

    pr.py         the candidate's PR: title, body, results comment, status lines, commit messages
    tables.py     results tables (markdown and terminal), the loop's lines, job summaries, results.tsv
    resources.py  resources.md: the Log (one entry per verdict) and its Summary section
    summary.py    the Summary's contents: What works / What does not / Open ideas, offline or by an LLM
    text.py       the small formatting rules they share (numbers, one-line text, code fences)

Nothing here decides, runs or stores anything: records in, text out. Writing a file is the
caller's business (the forge takes the texts back, the CLI prints them), except for the
path-taking helpers of resources.py, which write atomically.
"""
