"""The one retry policy: a few more attempts after the first, with exponential backoff.

    for attempt in retrying(retries=2, backoff_s=5.0, when=is_transient):
        with attempt:
            do_it()

waits backoff_s, then 2 x backoff_s, 4 x ... between attempts, retries only the exceptions `when`
accepts, and re-raises the last one when the attempts are spent. Used by the runners (an
infrastructure failure), the GitHub forge (a 5xx on a request PyGithub does not retry itself) and
git (a network hiccup, a push that lost a race). Built on tenacity.
"""

from __future__ import annotations

from collections.abc import Callable

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential


def retrying(retries: int, backoff_s: float, when: Callable[[BaseException], bool]) -> Retrying:
    return Retrying(
        stop=stop_after_attempt(max(0, int(retries)) + 1),
        wait=wait_exponential(multiplier=backoff_s, exp_base=2, min=0),
        retry=retry_if_exception(when),
        reraise=True,
    )
