"""Ask DigitalOcean (GET /v2/sizes through pydo) whether each planned size is offered in its region now.

The catalog's region matrix is best evidence, not truth: GPU capacity moves. This check answers with what the
API says today and, where a size is missing from a region, names the regions that have it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agentcloud.errors import LiveCheckError
from agentcloud.planner import ServingPlan

DEFAULT_ENDPOINT = "https://api.digitalocean.com"
PAGE_SIZE = 200
MAX_PAGES = 20


@dataclass(frozen=True)
class SizeOffer:
    """A size as DigitalOcean's API lists it."""

    slug: str
    available: bool
    regions: tuple[str, ...]
    price_hourly: float | None


@dataclass(frozen=True)
class Availability:
    """Whether a plan's size is offered in its region now."""

    stack: str
    size_slug: str
    region: str
    offered: bool
    regions_with_size: tuple[str, ...]
    note: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "size_slug": self.size_slug,
            "region": self.region,
            "offered": self.offered,
            "regions_with_size": list(self.regions_with_size),
            "note": self.note,
        }


def fetch_sizes(
    token: str, endpoint: str = DEFAULT_ENDPOINT, timeout_s: float = 20.0
) -> dict[str, SizeOffer]:
    """Every size DigitalOcean sells self-serve, following pagination (bounded)."""
    import pydo
    from azure.core.exceptions import AzureError, HttpResponseError

    client = pydo.Client(token=token, endpoint=endpoint)
    extra: dict[str, Any] = {"connection_timeout": timeout_s, "read_timeout": timeout_s}
    if endpoint.startswith("http://"):
        extra["enforce_https"] = False  # a local emulator; the token still goes only where it was told
    sizes: dict[str, SizeOffer] = {}
    try:
        for page in range(1, MAX_PAGES + 1):
            body = client.sizes.list(per_page=PAGE_SIZE, page=page, **extra)
            batch = body.get("sizes") or []
            for s in batch:
                sizes[s["slug"]] = SizeOffer(
                    slug=s["slug"],
                    available=bool(s.get("available", True)),
                    regions=tuple(s.get("regions") or ()),
                    price_hourly=s.get("price_hourly"),
                )
            total = (body.get("meta") or {}).get("total", len(sizes))
            if not batch or len(sizes) >= total:
                break
    except HttpResponseError as exc:
        status = getattr(exc, "status_code", None)
        hint = " (check DIGITALOCEAN_TOKEN)" if status in (401, 403) else ""
        raise LiveCheckError(f"DigitalOcean answered {status} to GET /v2/sizes{hint}") from None
    except (AzureError, OSError) as exc:
        raise LiveCheckError(f"could not reach DigitalOcean at {endpoint}: {type(exc).__name__}") from None
    return sizes


def fetch_regions(
    token: str, endpoint: str = DEFAULT_ENDPOINT, timeout_s: float = 20.0
) -> dict[str, dict[str, Any]]:
    """GET /v2/regions: every region by slug, with its name and whether it takes new droplets."""
    import pydo
    from azure.core.exceptions import AzureError, HttpResponseError

    client = pydo.Client(token=token, endpoint=endpoint)
    extra: dict[str, Any] = {"connection_timeout": timeout_s, "read_timeout": timeout_s}
    if endpoint.startswith("http://"):
        extra["enforce_https"] = False
    try:
        body = client.regions.list(per_page=PAGE_SIZE, **extra)
    except HttpResponseError as exc:
        raise LiveCheckError(
            f"DigitalOcean answered {getattr(exc, 'status_code', None)} to GET /v2/regions"
        ) from None
    except (AzureError, OSError) as exc:
        raise LiveCheckError(f"could not reach DigitalOcean at {endpoint}: {type(exc).__name__}") from None
    return {r["slug"]: dict(r) for r in body.get("regions") or []}


def check(stack: str, plan: ServingPlan, sizes: dict[str, SizeOffer]) -> Availability:
    slug, region = plan.size_slug, plan.region
    offer = sizes.get(slug)
    if offer is None:
        note = (
            "contract-only size: never in the self-serve list; ask DigitalOcean sales"
            if plan.gpu.contract_only
            else "size not sold self-serve right now"
        )
        return Availability(stack, slug, region, False, (), note)
    offered = offer.available and region in offer.regions
    if offered:
        note = "offered"
    elif not offer.available:
        note = "size exists but is not available for new droplets anywhere right now"
    else:
        others = ", ".join(offer.regions) or "none"
        note = f"not offered in {region}; regions with {slug} now: {others}"
    return Availability(stack, slug, region, offered, offer.regions if offer.available else (), note)


def choose(stack: str, alternatives: list[ServingPlan], sizes: dict[str, SizeOffer]) -> dict[str, Any]:
    """The declared placement's availability, and which alternative an up would land on now (the first whose
    size is offered in its region), as ``chosen`` ("fallback 1: nyc2 on h100"), when it is not the first."""
    first = check(stack, alternatives[0], sizes).as_dict()
    if not first["offered"]:
        for i, alternative in enumerate(alternatives[1:], start=1):
            if check(stack, alternative, sizes).offered:
                first["chosen"] = f"fallback {i}: {alternative.region} on {alternative.gpu_type_name}"
                break
    return first


def check_all(items: Iterable[tuple[str, ServingPlan]], sizes: dict[str, SizeOffer]) -> list[Availability]:
    return [check(stack, plan, sizes) for stack, plan in items]
