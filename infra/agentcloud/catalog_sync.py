"""`agentcloud catalog sync`: the catalog's prices and regions made to agree with DigitalOcean's API.

It reads ``GET /v2/sizes`` and ``GET /v2/regions`` (through pydo; ``DIGITALOCEAN_API_ENDPOINT`` points it
elsewhere) and, for every self-serve gpu type of the catalog, compares the hourly price and the regions where
the size is offered now (a region that takes no new droplets offers nothing).
Differences are written into the file that holds each value, in place (comments and layout kept), and every
gpu type and region it confirmed records the date and source (``checked: {date, via}``). A value that comes
from the catalog agentcloud ships is written into the project's overlay (``presets.yaml``) instead, so an
installed tool is never edited. ``--check`` changes nothing and fails when a value differs (for CI).

Contract-only sizes never appear in the self-serve list: they are left as they are. Sizes the API sells that
the catalog lacks, and regions it sells GPUs in that the catalog lacks, are reported, not invented: a gpu type
needs facts (engine images, the droplet image) that the size list does not give."""

from __future__ import annotations

import datetime
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentcloud.catalog import Catalog, catalog_sources, load_catalog
from agentcloud.document import KeyPath, load_document, overlay
from agentcloud.errors import InfraError, format_path
from agentcloud.live import SizeOffer
from agentcloud.yaml_edit import set_value

VIA = "GET /v2/sizes"
PRICE_TOLERANCE = 0.005  # cents are what DigitalOcean lists


@dataclass(frozen=True)
class Change:
    path: KeyPath
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{format_path(self.path)}: {self.before} -> {self.after}"


@dataclass
class SyncResult:
    changes: list[Change]
    notes: list[str]
    diff: str
    files: list[Path]


def offered_in(offer: SizeOffer | None, region: str) -> bool:
    return offer is not None and offer.available and region in offer.regions


def compare(
    catalog: Catalog, sizes: dict[str, SizeOffer], regions: dict[str, dict[str, Any]] | None = None
) -> tuple[list[Change], list[str], list[KeyPath]]:
    """Value changes, notes for people, and the paths whose `checked` record this sync renews. ``regions``
    (GET /v2/regions) names regions and says which take no new droplets: nothing is offered there."""
    changes: list[Change] = []
    notes: list[str] = []
    regions = regions or {}
    closed = {slug for slug, r in regions.items() if r.get("available") is False}
    sizes = {
        slug: SizeOffer(o.slug, o.available, tuple(r for r in o.regions if r not in closed), o.price_hourly)
        for slug, o in sizes.items()
    }
    for slug in sorted(closed & catalog.regions.keys()):
        notes.append(f"region {slug} takes no new droplets now (GET /v2/regions)")
    confirmed: list[KeyPath] = []
    for name, gpu in catalog.gpu_types.items():
        if gpu.contract_only:
            continue
        offer = sizes.get(gpu.size_slug)
        if offer is None:
            notes.append(f"gpu_types.{name}: {gpu.size_slug} is not in {VIA} (retired?); left as it is")
            continue
        confirmed.append(("gpu_types", name))
        if offer.price_hourly is not None and abs(offer.price_hourly - gpu.hourly_usd) >= PRICE_TOLERANCE:
            changes.append(
                Change(("gpu_types", name, "hourly_usd"), gpu.hourly_usd, round(offer.price_hourly, 4))
            )
    for region_name, region in catalog.regions.items():
        keep = []
        for name, gpu in catalog.gpu_types.items():
            offer = sizes.get(gpu.size_slug)
            unknown = gpu.contract_only or offer is None  # nothing to say about it: as declared
            if (unknown and name in region.gpu_types) or (not unknown and offered_in(offer, region_name)):
                keep.append(name)
        confirmed.append(("regions", region_name))
        if set(keep) != set(region.gpu_types):
            changes.append(Change(("regions", region_name, "gpu_types"), list(region.gpu_types), keep))
    known = {g.size_slug for g in catalog.gpu_types.values()}
    for slug, offer in sorted(sizes.items()):
        if slug.startswith("gpu-") and slug not in known and offer.available and offer.regions:
            price = f"${offer.price_hourly:.2f}/h" if offer.price_hourly is not None else "no price"
            notes.append(
                f"{slug} ({price}, in {', '.join(offer.regions)}) is sold but not in the catalog: add a gpu "
                "type for it (docs/catalog.md says which facts it needs)"
            )
    gpu_regions = {r for o in sizes.values() if o.slug.startswith("gpu-") and o.available for r in o.regions}
    for region_name in sorted(gpu_regions - catalog.regions.keys()):
        named = f" ({regions[region_name]['name']})" if regions.get(region_name, {}).get("name") else ""
        notes.append(f"region {region_name}{named} sells GPU droplets but is not in the catalog's regions")
    return changes, notes, confirmed


def sync(
    sizes: dict[str, SizeOffer],
    catalog_path: Path | str | None = None,
    check: bool = False,
    today: datetime.date | None = None,
    regions: dict[str, dict[str, Any]] | None = None,
) -> SyncResult:
    """Compare, and unless ``check``, write the changes and the `checked` records. Returns what changed."""
    sources = catalog_sources(catalog_path)
    catalog = load_catalog(catalog_path)
    doc = load_document(sources[0])
    for extra in sources[1:]:
        doc = overlay(doc, load_document(extra))
    changes, notes, confirmed = compare(catalog, sizes, regions)
    if check:
        return SyncResult(changes, notes, "", [])
    stamp = {"date": today or datetime.date.today(), "via": VIA}
    writable = _writable(sources, catalog_path)
    texts: dict[Path, str] = {}
    edits = [(c.path, c.after) for c in changes] + [((*p, "checked"), stamp) for p in confirmed]
    for path, value in edits:
        origin = Path(doc.origin_of(path))
        target = origin if origin in writable else writable[-1]
        if target not in texts:
            texts[target] = target.read_text(encoding="utf-8") if target.exists() else ""
        texts[target] = set_value(texts[target], str(target), path, value)
    diff: list[str] = []
    for target, text in texts.items():
        before = target.read_text(encoding="utf-8") if target.exists() else ""
        if text != before:
            diff += difflib.unified_diff(
                before.splitlines(keepends=True), text.splitlines(keepends=True), str(target), str(target)
            )
            target.write_text(text, encoding="utf-8")
    load_catalog(catalog_path)  # what was written validates (it was checked edit by edit; this is the whole)
    return SyncResult(changes, notes, "".join(diff), sorted(texts))


def _writable(sources: list[Path], catalog_path: Path | str | None) -> list[Path]:
    """Files sync may edit: an explicit catalog; else the project's presets.yaml (this repository's is the
    shipped catalog itself), never an installed package's copy."""
    if catalog_path is not None:
        return [Path(catalog_path)]
    from agentcloud.project import find_project, shipped_catalog

    project = find_project()
    if project is None:
        raise InfraError(
            "catalog sync writes into your project's presets.yaml, and there is no project here: run it "
            "inside one (`agentcloud init DIR` starts one), or name a catalog file with --catalog"
        )
    own = project.root / "presets.yaml"
    if own.resolve() == shipped_catalog().resolve():
        return [shipped_catalog()]
    return [*(s for s in sources if s.resolve() == own.resolve()), own]


def catalog_age(catalog: Catalog, today: datetime.date | None = None) -> tuple[datetime.date | None, int]:
    """The oldest `checked` date of the catalog's gpu types and regions (None when some figure records
    none), and how many of them record none."""
    dates = [g.checked.date for g in catalog.gpu_types.values() if g.checked] + [
        r.checked.date for r in catalog.regions.values() if r.checked
    ]
    unrecorded = sum(1 for g in catalog.gpu_types.values() if g.checked is None) + sum(
        1 for r in catalog.regions.values() if r.checked is None
    )
    return (min(dates) if dates else None), unrecorded
