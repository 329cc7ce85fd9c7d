"""Capacity-aware provisioning: when DigitalOcean answers that a size is not available (or has no capacity)
the up moves to the deployment's next fallback, in the user's order, and says which it chose and why.

The stack runs one alternative at a time (stack config ``agent-cloud:placement``: 0 as declared, i the i-th
fallback). An up that fails for capacity is retried on the next alternative; any other failure ends the up as
it is. Both stack operations use this: Pulumi's Automation API, and the in-process program against a
DigitalOcean-compatible API (lifecycle/mocked.py)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from agentcloud.errors import InfraError
from agentcloud.spec import DeploymentSpec

CAPACITY = re.compile(
    r"size is not available|not available in this region|no (?:available )?capacity|out of capacity|"
    r"insufficient capacity|not enough (?:capacity|resources)|region is (?:currently )?unavailable|"
    r"droplet limit|size_unavailable",
    re.IGNORECASE,
)


class NoCapacity(InfraError):
    """DigitalOcean had no capacity for any alternative of a deployment."""


def is_capacity_error(text: str) -> bool:
    """Whether an error from DigitalOcean (or a failed up that carries it) means "no capacity here"."""
    return CAPACITY.search(text) is not None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    line = next(
        (ln for ln in text.splitlines() if is_capacity_error(ln)), text.splitlines()[0] if text else ""
    )
    # azure-core (under pydo) prefixes the error's code, which DigitalOcean's bodies lack: "(None) ..."
    return re.sub(r"^\([^)]*\)\s*", "", line.strip())[:200]


def _elsewhere(alternatives: list[DeploymentSpec]) -> str:
    """Regions the catalog lists for the gpu types tried, other than those tried: fallbacks to consider."""
    from agentcloud.catalog import load_catalog
    from agentcloud.spec import gpu_type_of

    catalog = load_catalog()
    tried = {(a.region, gpu_type_of(a, catalog)) for a in alternatives}
    offers = []
    for gpu in dict.fromkeys(g for _, g in tried if g):
        regions = [r for r in catalog.regions_offering(gpu) if (r, gpu) not in tried]
        if regions:
            offers.append(f"{gpu} in {', '.join(regions)}")
    return "; ".join(offers)


def up_with_fallbacks(
    spec: DeploymentSpec,
    attempt: Callable[[int], dict[str, Any]],
    progress: Callable[[str], None],
    start: int = 0,
) -> dict[str, Any]:
    """Run ``attempt(i)`` for alternative ``i`` from ``start`` until one lands; returns its outputs with a
    ``placement`` entry (index, where, and the reasons earlier ones were passed over)."""
    alternatives = spec.alternatives()
    passed: list[str] = []
    for index in range(start, len(alternatives)):
        alternative = alternatives[index]
        if passed:
            progress(f"trying fallback {index}: {alternative.placement()}")
        try:
            outputs = attempt(index)
        except Exception as exc:
            if not is_capacity_error(str(exc)):
                raise
            reason = _reason(exc)
            passed.append(f"{alternative.placement()}: {reason}")
            left = len(alternatives) - index - 1
            progress(
                f"no capacity for {alternative.placement()} ({reason}); "
                + (f"{left} fallback(s) left" if left else "no fallback left")
            )
            continue
        if passed:
            progress(
                f"landed on fallback {index}: {alternative.placement()} (passed over: {'; '.join(passed)})"
            )
        return {**outputs, "placement": {"index": index, "where": alternative.placement(), "passed": passed}}
    hint = (
        "add fallbacks (other regions, gpu types or precision) to the stack file, or try again later"
        if not spec.fallbacks
        else "add more fallbacks, or try again later"
    )
    elsewhere = _elsewhere(alternatives)
    if elsewhere:
        hint += f"; the catalog also offers {elsewhere}"
    raise NoCapacity(
        f"{spec.name}: DigitalOcean has no capacity for any alternative: {'; '.join(passed)}; {hint}"
    )
