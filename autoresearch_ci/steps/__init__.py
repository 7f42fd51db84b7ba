"""One tick of the research loop, as three steps that run in one process or as three CI jobs.

    settle.py    settle(cfg, forge, ledger, ids)                -> Settled      CI: what earlier ticks left
    propose.py   propose(cfg, forge, proposer, ledger, runner)  -> TickState    the LLM key; pushes branches
    guard.py     run_guard_commands(cfg, state, checkout)       -> GuardResults CI: no secret, no write token
    train.py     train(cfg, state, runner, ledger)              -> TickResults  the GPU; no other secret
    judge.py     judge(cfg, state, results, forge, ledger)      -> records      the write token
    loop.py      run_loop(cfg, repo, iterations)                   the three in one process, N times

The state between steps is plain JSON (state.py: tick.json, guard.json, results.json) so CI can hand
it from job to job as artifacts. Every step is idempotent: a record already in the ledger is not
appended again, a candidate already merged is not merged again, so a tick that died half-way can
simply run again (and in CI the ids come from the Actions run, so a re-run finds what it made).

Nothing is lost: a failed proposal, a guard rejection, a crash and an infrastructure failure each
end as a ledger record with its reason, and a discarded candidate's commit stays reachable.

No step touches a path: files come from the forge and go back to it, runs go through the runner,
records through the ledger.
"""
