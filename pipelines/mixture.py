"""Mixture group: the VL-Health mixture built from every ingested source, its stage subsets,
the checks on it, and the LLaVA-style export.

One build writes all subsets at once (they are decided together: dedup and decontamination
look across all of them), so the subsets are the outputs of one multi-asset.
"""

import time
from collections.abc import Sequence

import dagster as dg

from healthgpt.data.mixture import card
from healthgpt.data.mixture import checks as mixture_checks
from healthgpt.data.mixture.build import SUBSETS, build_mixture
from healthgpt.data.mixture.config import PRESETS, MixtureConfig
from healthgpt.data.mixture.export import export_llava
from healthgpt.settings import settings
from pipelines.metadata import png_markdown
from pipelines.resources import DataLocations
from pipelines.sources import ingested_key

GROUP = "mixture"
OWNERS = ["team:data"]
CHECKS = ("no_leakage", "ratios_within_tolerance", "tasks_present", "images_present")
# Fields of the asset rather than of the mixture config.
NOT_FORWARDED = frozenset({"preset", "sources", "ratio_tolerance"})


def mixture_key(subset: str) -> dg.AssetKey:
    return dg.AssetKey(["mixture", subset])


class MixtureBuildConfig(dg.Config):
    """The mixture's knobs. `preset` picks the paper's composition or the small sample one
    (unset: `HEALTHGPT_MIXTURE_PRESET`, else demo); the other fields override the preset only
    when run config names them (weights and caps are keyed `source/task`, globs allowed).
    `sources`: the datasets to mix (empty: every registered dataset)."""

    preset: str | None = None
    sources: list[str] = []
    seed: int = 0
    closed_question_style: str | None = None
    near_dup_hamming: int = 4
    generation_test_fraction: float | None = None
    stage2_size: int | None = None
    stage1_weights: dict[str, float] = {}
    stage1_caps: dict[str, int] = {}
    stage3_weights: dict[str, float] = {}
    stage3_caps: dict[str, int] = {}
    workers: int = 1
    ratio_tolerance: float = 0.02

    def preset_name(self) -> str:
        return self.preset or settings().mixture_preset

    def mixture_config(self) -> MixtureConfig:
        """The preset with the fields named in run config (`model_fields_set`) replaced;
        a field left out keeps the preset's value (the paper preset's `workers=0`)."""
        preset = self.preset_name()
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        named = self.model_fields_set - NOT_FORWARDED
        overrides = {name: getattr(self, name) for name in sorted(named)}
        return PRESETS[preset](**{k: v for k, v in overrides.items() if v is not None})


def vl_health_mixture_asset(datasets: Sequence[str]) -> dg.AssetsDefinition:
    """The mixture multi-asset over the ingestion of every dataset in `datasets`."""

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(
                mixture_key(subset),
                deps=[ingested_key(name) for name in datasets],
                group_name=GROUP,
                kinds={"parquet", "polars"},
                owners=OWNERS,
                description=f"VL-Health mixture subset `{subset}`: shards in the sample schema.",
                automation_condition=dg.AutomationCondition.eager(),
                skippable=False,
            )
            for subset in SUBSETS
        ],
        check_specs=[dg.AssetCheckSpec(check, asset=mixture_key("stage3")) for check in CHECKS],
        name="vl_health_mixture",
    )
    def vl_health_mixture(
        context: dg.AssetExecutionContext, config: MixtureBuildConfig, locations: DataLocations
    ):
        yield from build_vl_health_mixture(context, config, locations, config.sources or datasets)

    return vl_health_mixture


def build_vl_health_mixture(
    context: dg.AssetExecutionContext,
    config: MixtureBuildConfig,
    locations: DataLocations,
    datasets: Sequence[str],
):
    """The mixture asset's body: build from the ingested `datasets`, report, check."""
    mixture_config = config.mixture_config()
    inputs = {name: locations.ingested_dir(name) for name in datasets}
    out = locations.mixture_dir()
    started = time.perf_counter()

    def progress(phase: str, done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - started, 1e-6)
        context.log.info(f"mixture {phase}: {done}/{total} records ({rate:.0f}/s)")

    summary = build_mixture(inputs, out, mixture_config, progress=progress)
    chart = png_markdown(card.composition_chart_png(summary), "composition")
    composition = dg.MetadataValue.md(card.composition_markdown(summary))
    beside_the_paper = dg.MetadataValue.md(card.beside_the_paper(summary, mixture_config))
    # The dataset card's path (a local mixture; on an object store it sits under a version).
    card_path = (
        {"card": dg.MetadataValue.path(summary.paths["card"])} if "card" in summary.paths else {}
    )
    for subset in SUBSETS:
        shards = summary.shards.get(subset, [])
        yield dg.MaterializeResult(
            asset_key=mixture_key(subset),
            metadata={
                "rows": dg.MetadataValue.int(summary.rows(subset)),
                "path": dg.MetadataValue.path(str(out / subset)),
                "shards": dg.MetadataValue.json(
                    [{"path": s.path, "rows": s.rows, "sha256": s.sha256} for s in shards]
                ),
                "composition": composition,
                "composition_chart": chart,
                "beside_the_paper": beside_the_paper,
                "removed": dg.MetadataValue.json(summary.removed),
                "seconds": dg.MetadataValue.float(round(summary.seconds, 2)),
                # Images without a stored identity, and super-resolution inputs.
                "images_decoded": dg.MetadataValue.int(summary.images_decoded),
                **card_path,
            },
        )
    results = {
        "no_leakage": mixture_checks.check_no_leakage(out, mixture_config.near_dup_hamming),
        "ratios_within_tolerance": mixture_checks.check_ratios(
            out, mixture_config, config.ratio_tolerance
        ),
        "tasks_present": mixture_checks.check_tasks_present(out, mixture_config),
        "images_present": mixture_checks.check_images_present(out),
    }
    for check, (passed, details) in results.items():
        yield dg.AssetCheckResult(
            asset_key=mixture_key("stage3"), check_name=check, passed=passed, metadata=details
        )


@dg.asset(
    key=["mixture", "llava_export"],
    deps=[mixture_key(subset) for subset in SUBSETS],
    group_name=GROUP,
    kinds={"json"},
    owners=OWNERS,
    description="The mixture as LLaVA-style JSON plus an image folder, for other LLaVA trainers.",
)
def llava_export(locations: DataLocations) -> dg.MaterializeResult:
    out = locations.output_dir() / "mixture_llava"
    counts = export_llava(locations.mixture_dir(), out)
    return dg.MaterializeResult(
        metadata={"entries": dg.MetadataValue.json(counts), "path": dg.MetadataValue.path(str(out))}
    )


def mixture_assets(datasets: Sequence[str]) -> list[dg.AssetsDefinition]:
    """The mixture group's assets over `datasets` (the registered dataset names)."""
    return [vl_health_mixture_asset(datasets), llava_export]
