"""presets.yaml: the shipped catalog is consistent, and a broken one is reported precisely."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from agentcloud.catalog import Catalog, load_catalog, parse_catalog
from agentcloud.document import parse_document
from agentcloud.errors import CatalogError, ValidationError

ROOT = Path(__file__).resolve().parent.parent
SPEC_GPU_TYPES = {"h100", "mi300x", "mi300x_8", "mi325x", "mi325x_8", "h100_8", "h200", "h200_8", "l40s"}
SPEC_REGIONS = {"atl1", "nyc2", "tor1", "ric1", "ams3"}


def test_shipped_catalog_covers_the_spec(catalog: Catalog) -> None:
    assert set(catalog.gpu_types) >= SPEC_GPU_TYPES
    assert set(catalog.regions) >= SPEC_REGIONS
    assert set(catalog.presets) == {"speed", "latency", "cost", "balanced"}
    assert set(catalog.plans) == {"free", "basic", "professional", "enterprise"}
    tasks = {m.task.value for m in catalog.models.values()}
    assert tasks == {"generate", "embed", "rerank", "transcribe", "speech"}
    assert [name for name, _ in catalog.providers_for("llama-3.3-70b-instruct")] == [
        "nim",
        "huggingface",
        "meta",
    ]
    assert catalog.providers["anthropic"].format.value == "anthropic"
    assert catalog.plans["free"].requests_per_minute == 10
    assert catalog.plans["professional"].tokens_per_minute == 1_000_000
    assert catalog.gpu_types["mi325x"].contract_only and not catalog.gpu_types["h100"].contract_only
    assert catalog.gpu_types["h100_8"].vram_gib == 640


def test_plans_are_cumulative(catalog: Catalog) -> None:
    free = set(catalog.models_for_plan("free"))
    basic = set(catalog.models_for_plan("basic"))
    enterprise = set(catalog.models_for_plan("enterprise"))
    assert "llama-3.3-70b-instruct" in free and "bge-m3" not in free
    assert free < basic < enterprise
    assert enterprise == set(catalog.models)


def _raw() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "presets.yaml").read_text()))


def _parse(data: dict) -> Catalog:  # type: ignore[type-arg]
    return parse_catalog(parse_document(yaml.safe_dump(data, sort_keys=False), "presets.yaml"))


def test_unknown_key_lists_allowed_keys() -> None:
    data = _raw()
    data["gpu_types"]["h100"]["vram_gb"] = 80
    with pytest.raises(CatalogError) as err:
        _parse(data)
    text = str(err.value)
    assert "presets.yaml:" in text and "gpu_types.h100.vram_gb: unknown key" in text
    assert (
        "allowed: description, size_slug, vendor" in text and "fix: did you mean 'vram_gib_per_gpu'?" in text
    )


def test_wrong_type_names_value() -> None:
    data = _raw()
    data["gpu_types"]["h100"]["gpus"] = "eight"
    with pytest.raises(CatalogError) as err:
        _parse(data)
    assert "gpu_types.h100.gpus" in str(err.value) and "'eight'" in str(err.value)


def test_region_with_unknown_gpu_type() -> None:
    data = _raw()
    data["regions"]["nyc2"]["gpu_types"].append("a100")
    with pytest.raises(CatalogError) as err:
        _parse(data)
    text = str(err.value)
    assert "regions.nyc2.gpu_types[7]: unknown gpu type (got 'a100')" in text and "fix:" in text


def test_every_problem_reported_at_once() -> None:
    data = _raw()
    data["models"]["bge-m3"]["tier"] = "gold"
    data["presets"]["speed"]["gpu_type"] = "b200"
    with pytest.raises(CatalogError) as err:
        _parse(data)
    assert len(err.value.problems) == 2


def test_duplicate_key_is_refused_with_both_lines() -> None:
    text = "version: 1\nplans: {}\nversion: 1\n"
    with pytest.raises(ValidationError) as err:
        parse_document(text, "presets.yaml")
    assert "presets.yaml:3: version: duplicate key (first defined on line 1)" in str(err.value)


def test_yaml_syntax_error_names_line() -> None:
    with pytest.raises(ValidationError) as err:
        parse_document("version: 1\ngpu_types:\n  h100: [unclosed\n", "presets.yaml")
    assert "presets.yaml:" in str(err.value) and "not valid YAML" in str(err.value)


def test_provider_with_unknown_model() -> None:
    data = _raw()
    data["providers"]["nim"]["models"]["llama-9"] = {"upstream": "meta/llama-9"}
    with pytest.raises(CatalogError, match=r"providers\.nim\.models\.llama-9: unknown model"):
        _parse(data)


def test_provider_only_model_cannot_be_deployed(tmp_path: Path, catalog: Catalog) -> None:
    from agentcloud.errors import SpecError
    from agentcloud.spec import load_stack
    from tests.stackfiles import deployment, write_stack

    path = write_stack(tmp_path, deployment(model_id="claude-haiku-4-5"))
    with pytest.raises(SpecError, match="served by providers only"):
        load_stack(path, catalog)


def test_missing_file() -> None:
    with pytest.raises(ValidationError, match="file not found"):
        load_catalog("/nonexistent/presets.yaml")


def test_no_engine_image_needs_more_than_its_droplet_image_ships(catalog: Catalog) -> None:
    """Issue 14: from the catalog's own facts, every gpu type's engine images run on its droplet image's
    driver (the shipped catalog loads only if so); vLLM's default CUDA 13 image on DigitalOcean's CUDA 12.9
    NVIDIA image is refused, naming both."""
    from agentcloud.catalog import version_tuple

    for gpu in catalog.gpu_types.values():
        ships = catalog.droplet_images[gpu.droplet_image]
        for image in (gpu.engine_images.vllm, gpu.engine_images.llamacpp):
            needs = catalog.engine_images_need[image]
            for kind in ("cuda", "rocm"):
                if getattr(needs, kind):
                    assert getattr(ships, kind) and version_tuple(getattr(needs, kind)) <= version_tuple(
                        getattr(ships, kind)
                    ), (gpu.size_slug, image)
    data = _raw()
    data["engine_images_need"]["vllm/vllm-openai:v0.33.0"] = {"cuda": "13.0"}
    for gpu in data["gpu_types"].values():
        if gpu["vendor"] == "nvidia":
            gpu["engine_images"] = {**gpu["engine_images"], "vllm": "vllm/vllm-openai:v0.33.0"}
    with pytest.raises(CatalogError) as err:
        _parse(data)
    assert "gpu_types.h100.engine_images.vllm: 'vllm/vllm-openai:v0.33.0' needs cuda 13.0 but " in str(
        err.value
    )
    assert "gpu-h100x1-base ships cuda 12.9" in str(err.value)
