"""Per pipeline P with a patient-level model: ``P/patient_embeddings``, partitioned by patient_id.

Membership (which slides make up a patient) is read from the manifests at run time, not from a partition
mapping: Dagster drops custom partition mappings in the daemon and the UI. The asset depends on the
pipeline's per-slide upstream (its slide embeddings when kept) through ``AllPartitionMapping``, so the
edge shows in the asset graph; the slides that really went in are recorded in the sidecar (``sample_ids``)
and in the materialisation's metadata. The patient sensor requests a patient once all its slides are
done or failed, and again whenever one is added or changes.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetDep,
    AssetExecutionContext,
    AssetObservation,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from slide2vec_dagster.artifacts import process_list
from slide2vec_dagster.artifacts.slide_state import begin_patient, patient_files, withdraw
from slide2vec_dagster.config import PlatformConfig
from slide2vec_dagster.defs.asset_keys import patient_asset_key, slide_level_upstream
from slide2vec_dagster.defs.partitions import patient_partitions
from slide2vec_dagster.defs.resources import PlatformResource
from slide2vec_dagster.defs.slide_assets import slide_output_dim, vector_check_specs
from slide2vec_dagster.defs.slide_runs import (
    GPU_POOL,
    one_writer,
    payload_checks,
    refuse_after_worker_deaths,
    retry_policy,
    step_tags,
    tag_worker,
    the_slide_of,
)
from slide2vec_dagster.defs.tiling_assets import IO_MANAGER_KEY
from slide2vec_dagster.encoders import get_slide_spec
from slide2vec_dagster.failures import classify
from slide2vec_dagster.layout import PATIENT_KIND
from slide2vec_dagster.provenance import sidecar_lineage


def patient_output_dim(config: PlatformConfig, pipeline: str) -> int:
    model = config.pipelines[pipeline].model
    assert model is not None and model.patient_encoder is not None
    return get_slide_spec(model.patient_encoder, level="patient").output_dim(slide_output_dim(config, pipeline))


def _slides_table(members: list[Any], included: list[str], excluded: dict[str, str]) -> str:
    lines = ["| sample_id | slide | went in |", "|---|---|---|"]
    for entry in members:
        state = "yes" if entry.sample_id in included else f"no: {excluded.get(entry.sample_id, 'pending')}"
        lines.append(f"| {entry.sample_id} | {entry.image_path} | {state.replace('|', '/')} |")
    return "\n".join(lines)


def build_patient_asset(pipeline: str, config: PlatformConfig) -> AssetsDefinition:
    pipeline_config = config.pipelines[pipeline]
    model = pipeline_config.model
    assert model is not None and model.patient_encoder is not None
    key = patient_asset_key(pipeline, config)
    assert key is not None
    dim = patient_output_dim(config, pipeline)
    spec = get_slide_spec(model.patient_encoder, level="patient")
    upstream = slide_level_upstream(pipeline, config)

    @asset(
        key=key,
        deps=[AssetDep(upstream, partition_mapping=AllPartitionMapping())] if upstream else [],
        partitions_def=patient_partitions,
        io_manager_key=IO_MANAGER_KEY,
        group_name=pipeline,
        code_version=pipeline_config.patient_fingerprint(),
        backfill_policy=BackfillPolicy.multi_run(1),
        retry_policy=retry_policy(config),
        check_specs=vector_check_specs(key, patient_partitions),
        kinds={"pytorch"},
        description=f"{spec.name} ({dim}-d) embedding of each patient's slides (manifest order): "
        f"{PATIENT_KIND}/<patient_id>.{pipeline_config.output_format} + .meta.json",
        op_tags=step_tags(config, pipeline, "gpu"),
        # The model's steps share the GPUs: at most execution.gpu_pool_size of them at once.
        pool=GPU_POOL,
    )
    def patient_embeddings(
        context: AssetExecutionContext, platform: PlatformResource
    ) -> Iterator[Output[Any] | AssetCheckResult]:
        with one_writer(context, platform, pipeline, "patient_id"):
            yield from _patient(context, platform)

    def _patient(
        context: AssetExecutionContext, platform: PlatformResource
    ) -> Iterator[Output[Any] | AssetCheckResult]:
        from slide2vec_dagster.artifacts.embeddings import EmbeddingCheckError, verify_vector
        from slide2vec_dagster.slide_level import embed_patient, patient_inputs

        patient_id = the_slide_of(context, "patient")
        tag_worker(context, platform)
        current = platform.config().pipelines[pipeline]
        layout = platform.layout(pipeline)
        try:
            refuse_after_worker_deaths(context, platform, patient_id)
            begin_patient(layout, patient_id)
            members = platform.patient_members(patient_id)
            rows = process_list.read_rows(layout.process_list)
            inputs = patient_inputs(patient_id, members, current, layout, rows)
            lineage = sidecar_lineage(pipeline, platform.config().resolved_pipeline(pipeline))
            outcome = embed_patient(inputs, members, current, layout, run_id=context.run_id, lineage=lineage)
        except Exception as exc:
            raise fail_patient(context, patient_id, exc) from exc
        context.log.info(
            f"{patient_id}: {outcome.status}, {len(inputs.included)} slide(s) in, {len(inputs.excluded)} left out"
        )
        yield Output(
            outcome,
            metadata={
                "status": outcome.status,
                "encoder": spec.name,
                "feature_dim": dim,
                "num_slides": len(inputs.included),
                "sample_ids": ", ".join(inputs.included),
                "slides": MetadataValue.md(_slides_table(members, inputs.included, inputs.excluded)),
                "left_out": MetadataValue.json(inputs.excluded),
                "inputs_key": inputs.key,
            },
        )
        payload = layout.embedding_payload(PATIENT_KIND, patient_id, current.output_format)
        try:
            results = verify_vector(payload, layout.embedding_meta(PATIENT_KIND, patient_id), dim)
        except Exception as exc:  # the files just written do not load: the patient has no valid output
            withdraw(patient_files(layout, patient_id))
            raise fail_patient(context, patient_id, exc) from exc
        checks, failed = payload_checks(key, payload, results)
        yield from checks
        if failed:
            withdraw(patient_files(layout, patient_id))
            problem = EmbeddingCheckError(f"{payload} fails {', '.join(failed)}; the files were withdrawn")
            raise fail_patient(context, patient_id, problem)

    def fail_patient(context: AssetExecutionContext, patient_id: str, exc: BaseException) -> Failure:
        """The patient's failure, as a slide's (fail_slide): classified (retried only when a retry can
        help), and recorded on the partition, where the UI shows it (patients have no process_list row)."""
        kind = classify(exc, model.batch_size)
        error = process_list.format_error(exc) + (f" ({kind.hint})" if kind.hint else "")
        metadata = {"patient_id": patient_id, "error": error, "failure_kind": kind.kind}
        context.log_event(
            AssetObservation(asset_key=key, partition=patient_id, metadata={"status": "failed", **metadata})
        )
        return Failure(description=f"patient {patient_id!r}: {error}", metadata=metadata, allow_retries=kind.retry)

    return patient_embeddings
