"""Chunk partitions: one Dagster partition per stable chunk; the chunks cover every item once."""

import json

import dagster as dg

from healthgpt.data.sources.chunks import ChunkPlan
from pipelines.partitions import chunk_partitions, chunk_plan_for


def test_partition_keys_are_the_chunk_ids():
    partitions = chunk_partitions(chunk_plan_for("mimic_cxr", 12))
    assert partitions.get_partition_keys() == [f"{i:03d}" for i in range(12)]


def test_partitioned_asset_processes_each_item_in_exactly_one_chunk(tmp_path):
    keys = [f"files/p1{i % 10}/p{i}/s{i}/{i:06d}.jpg" for i in range(300)]
    plan = ChunkPlan("toy", n_chunks=4)

    @dg.asset(partitions_def=chunk_partitions(plan))
    def chunked(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        keep = plan.member(context.partition_key)
        mine = [k for k in keys if keep(k)]
        (tmp_path / f"chunk={context.partition_key}.json").write_text(json.dumps(mine))
        return dg.MaterializeResult(metadata={"items": len(mine)})

    instance = dg.DagsterInstance.ephemeral()
    for chunk_id in plan.chunk_ids():
        assert dg.materialize([chunked], partition_key=chunk_id, instance=instance).success
    done = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("chunk=*.json"))]
    assert len(done) == 4
    assert sorted(k for chunk in done for k in chunk) == sorted(keys)
    assert min(map(len, done)) > 0
    assert instance.get_materialized_partitions(dg.AssetKey("chunked")) == set(plan.chunk_ids())
