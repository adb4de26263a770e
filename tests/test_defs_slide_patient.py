"""Slide and patient levels: assets, sidecars, zero tiles, patient membership, the patient sensor, latents."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    SensorResult,
    SkipReason,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from slide2vec_dagster import slide_embedding
from slide2vec_dagster.config import ConfigError, load_config
from slide2vec_dagster.defs.build import build_definitions
from slide2vec_dagster.defs.partitions import register
from slide2vec_dagster.encoders import BASELINE_FEATURE_DIM, load_encoder
from slide2vec_dagster.manifest import read_manifests
from tests.contract import check_output_dir
from tests.dagster_helpers import DATA, blank_slide, write_manifest
from tests.slide_encoder_fixtures import FAKE_REVISION, write_fake_remote_repo

CMU = DATA / "CMU-1-Small-Region.svs"
SYNTHETIC = DATA / "synthetic-he-0.5mpp.tiff"
TILING = {"params": {"requested_spacing_um": 1.0, "requested_tile_size_px": 224}}
MEAN_POOL = {
    "name": "baseline-color-texture",
    "slide_encoder": "mean-pool",
    "patient_encoder": "mean-pool",
    "save_tile_embeddings": True,
    "save_slide_embeddings": True,
}
# The seed's keys plus the contract's (ARTIFACTS.md s5), and the provenance object the contract allows.
SLIDE_KEYS = {
    "sample_id", "artifact_type", "encoder_level", "encoder_name", "feature_dim", "format", "image_path",
    "feature_dtype", "num_tiles", "provenance",
}  # fmt: skip
PATIENT_KEYS = {
    "patient_id", "artifact_type", "encoder_name", "encoder_level", "format", "feature_dim", "num_slides",
    "feature_dtype", "sample_ids", "provenance",
}  # fmt: skip


def _setup(tmp_path: Path, rows: list[dict], pipelines: dict):
    write_manifest(tmp_path / "cohort.csv", rows)
    path = tmp_path / "platform.yaml"
    path.write_text(yaml.safe_dump({"manifests": ["cohort.csv"], "output_root": "out", "pipelines": pipelines}))
    config = load_config(path)
    return config, build_definitions(config)


def _slide_assets(defs) -> list:
    return [a for a in defs.assets if a.partitions_def is not None and a.partitions_def.name == "sample_id"]


def _patient_assets(defs) -> list:
    return [a for a in defs.assets if a.partitions_def is not None and a.partitions_def.name == "patient_id"]


def _run(defs, instance, partition: str, patients: bool = False):
    assets = _patient_assets(defs) if patients else _slide_assets(defs)
    return materialize(
        assets, partition_key=partition, instance=instance, resources=defs.resources, raise_on_error=False
    )


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with (out / "process_list.csv").open(newline="") as handle:
        return {row["sample_id"]: row for row in csv.DictReader(handle)}


ROWS = [
    {"sample_id": "a1", "image_path": str(CMU), "patient_id": "pa"},
    {"sample_id": "a2", "image_path": str(SYNTHETIC), "patient_id": "pa"},
    {"sample_id": "b1", "image_path": str(SYNTHETIC), "patient_id": "pb"},
]


def test_the_asset_graph_of_slide_and_patient_pipelines(tmp_path: Path):
    pipelines = {
        "kept": {"tiling": TILING, "model": MEAN_POOL},
        "lean": {
            "tiling": TILING,
            "model": {**MEAN_POOL, "save_tile_embeddings": False, "save_slide_embeddings": False},
        },
    }
    _, defs = _setup(tmp_path, ROWS, pipelines)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"kept/tile_embeddings", "kept/slide_embeddings", "kept/patient_embeddings"} <= keys
    # Nothing kept but the patient level: no tile or slide assets, the patient reads the coordinates.
    assert {k for k in keys if k.startswith("lean/")} == {
        "lean/coordinates", "lean/mask_preview", "lean/tiling_preview", "lean/patient_embeddings",
    }  # fmt: skip
    assert graph.get(AssetKey(["kept", "slide_embeddings"])).parent_keys == {
        AssetKey(["kept", "coordinates"]),
        AssetKey(["kept", "tile_embeddings"]),
        AssetKey("slides"),  # tile features not kept are computed from the slide's pixels
    }
    assert graph.get(AssetKey(["kept", "patient_embeddings"])).parent_keys == {AssetKey(["kept", "slide_embeddings"])}
    assert graph.get(AssetKey(["lean", "patient_embeddings"])).parent_keys == {AssetKey(["lean", "coordinates"])}
    assert graph.get(AssetKey(["kept", "patient_embeddings"])).partitions_def.name == "patient_id"
    assert defs.resolve_job_def("kept_patients_job") is not None
    assert defs.resolve_sensor_def("patient_sensor") is not None


def test_slide_and_patient_embeddings_are_materialised_in_the_contract_layout(tmp_path: Path):
    config, defs = _setup(tmp_path, ROWS, {"p": {"tiling": TILING, "model": MEAN_POOL}})
    out = config.output_dir("p")
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        for sample_id in ("a1", "a2", "b1"):
            result = _run(defs, instance, sample_id)
            assert result.success, sample_id
            checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
            assert checks["shape_is_one_vector"] and checks["all_finite"] and checks["feature_dim_matches_registry"]
        result = _run(defs, instance, "pa", patients=True)
        assert result.success
        metadata = result.get_asset_materialization_events()[0].materialization.metadata
        assert metadata["num_slides"].value == 2 and metadata["sample_ids"].value == "a1, a2"
        assert str(CMU) in metadata["slides"].value  # the slide files that went in, shown in the UI
        assert instance.get_materialized_partitions(AssetKey(["p", "patient_embeddings"])) == {"pa"}
    tiles = torch.load(out / "tile_embeddings" / "a1.pt", weights_only=True)
    slide = torch.load(out / "slide_embeddings" / "a1.pt", weights_only=True)
    assert slide.shape == (BASELINE_FEATURE_DIM,)
    torch.testing.assert_close(slide, tiles.float().mean(dim=0))  # mean-pool: the mean of the tile features
    slide_meta = json.loads((out / "slide_embeddings" / "a1.meta.json").read_text())
    assert set(slide_meta) == SLIDE_KEYS
    assert slide_meta["encoder_level"] == "slide" and slide_meta["num_tiles"] == tiles.shape[0]
    # The level of the model that wrote them: this pipeline's top level is the patient.
    assert json.loads((out / "tile_embeddings" / "a1.meta.json").read_text())["encoder_level"] == "patient"
    patient = torch.load(out / "patient_embeddings" / "pa.pt", weights_only=True)
    second = torch.load(out / "slide_embeddings" / "a2.pt", weights_only=True)
    torch.testing.assert_close(patient, torch.stack([slide, second]).mean(dim=0))
    patient_meta = json.loads((out / "patient_embeddings" / "pa.meta.json").read_text())
    assert set(patient_meta) == PATIENT_KEYS
    assert patient_meta["sample_ids"] == ["a1", "a2"] and patient_meta["num_slides"] == 2
    assert _rows(out)["a1"]["slide_feature_path"].endswith("slide_embeddings/a1.pt")
    assert check_output_dir(out, require=("tile_embeddings", "slide_embeddings", "patient_embeddings")) == []


def test_a_zero_tile_slide_fails_and_is_left_out_of_its_patient(tmp_path: Path):
    blank = blank_slide(tmp_path / "blank.tiff")
    rows = [ROWS[0], {"sample_id": "empty", "image_path": str(blank), "patient_id": "pa"}]
    rows.append({"sample_id": "only-empty", "image_path": str(blank), "patient_id": "pz"})
    config, defs = _setup(tmp_path, rows, {"p": {"tiling": TILING, "model": MEAN_POOL}})
    out = config.output_dir("p")
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert _run(defs, instance, "a1").success
        assert not _run(defs, instance, "empty").success
        assert not _run(defs, instance, "only-empty").success
        assert _run(defs, instance, "pa", patients=True).success
        lonely = _run(defs, instance, "pz", patients=True)
        assert not lonely.success
    row = _rows(out)["empty"]
    assert row["status"] == "failed" and row["error"].startswith("ZeroTilesError:") and "zero tiles" in row["error"]
    assert row["num_tiles"] == "0"  # the tiling of this run is still described
    assert not (out / "slide_embeddings" / "empty.pt").exists()
    assert (out / "tiles" / "empty.coordinates.npz").exists()  # coordinates are written with 0 tiles
    meta = json.loads((out / "patient_embeddings" / "pa.meta.json").read_text())
    assert meta["sample_ids"] == ["a1"] and meta["num_slides"] == 1
    assert "empty" in meta["provenance"]["excluded_slides"]
    failure = lonely.get_step_failure_events()[0].step_failure_data.user_failure_data
    assert "PatientWithoutSlidesError" in failure.description and "'pz'" in failure.description
    assert not (out / "patient_embeddings" / "pz.pt").exists()
    assert check_output_dir(out) == []


def _sensor_tick(defs, instance, cursor):
    sensor = defs.resolve_sensor_def("patient_sensor")
    return sensor(build_sensor_context(instance=instance, cursor=cursor, definitions=defs))


def test_the_patient_sensor_waits_for_the_slides_and_follows_membership(tmp_path: Path):
    config, defs = _setup(tmp_path, ROWS, {"p": {"tiling": TILING, "model": MEAN_POOL}})
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert _run(defs, instance, "a1").success
        tick = _sensor_tick(defs, instance, None)
        assert isinstance(tick, SensorResult) and tick.run_requests == []  # a2 and b1 not done yet
        for sample_id in ("a2", "b1"):
            assert _run(defs, instance, sample_id).success
        tick = _sensor_tick(defs, instance, tick.cursor)
        assert sorted(r.partition_key for r in tick.run_requests) == ["pa", "pb"]
        assert {r.job_name for r in tick.run_requests} == {"p_patients_job"}
        for patient in ("pa", "pb"):
            assert _run(defs, instance, patient, patients=True).success
        done = _sensor_tick(defs, instance, None)
        assert done.run_requests == []  # every patient current
        assert isinstance(_sensor_tick(defs, instance, done.cursor), SkipReason)
        # A slide added to patient pb: pb waits for it, then is requested again (a new run key).
        rows = [*ROWS, {"sample_id": "b2", "image_path": str(CMU), "patient_id": "pb"}]
        write_manifest(tmp_path / "cohort.csv", rows)
        register(instance, read_manifests(config.manifests))
        waiting = _sensor_tick(defs, instance, done.cursor)
        assert waiting.run_requests == []
        assert _run(defs, instance, "b2").success
        again = _sensor_tick(defs, instance, waiting.cursor)
        assert [r.partition_key for r in again.run_requests] == ["pb"]
        assert again.run_requests[0].run_key != tick.run_requests[1].run_key
        assert _run(defs, instance, "pb", patients=True).success
    meta = json.loads((config.output_dir("p") / "patient_embeddings" / "pb.meta.json").read_text())
    assert meta["sample_ids"] == ["b1", "b2"]


def test_a_changed_slide_embedding_makes_its_patient_due_again(tmp_path: Path):
    config, defs = _setup(tmp_path, ROWS[:2], {"p": {"tiling": TILING, "model": MEAN_POOL}})
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        for sample_id in ("a1", "a2"):
            assert _run(defs, instance, sample_id).success
        assert _run(defs, instance, "pa", patients=True).success
        assert _sensor_tick(defs, instance, None).run_requests == []
        # The pipeline's tiling changes: a1's slide embedding is recomputed from new coordinates.
        raw = yaml.safe_load((tmp_path / "platform.yaml").read_text())
        raw["pipelines"]["p"]["tiling"]["params"]["overlap"] = 0.25
        (tmp_path / "platform.yaml").write_text(yaml.safe_dump(raw))
        config = load_config(tmp_path / "platform.yaml")
        defs = build_definitions(config)
        assert _run(defs, instance, "a1").success
        assert _sensor_tick(defs, instance, None).run_requests == []  # a2 is stale too: wait for it
        assert _run(defs, instance, "a2").success
        assert [r.partition_key for r in _sensor_tick(defs, instance, None).run_requests] == ["pa"]


def test_tile_and_slide_embeddings_that_are_not_kept_are_computed_in_memory(tmp_path: Path):
    lean = {**MEAN_POOL, "save_tile_embeddings": False, "save_slide_embeddings": False}
    pipelines = {"kept": {"tiling": TILING, "model": MEAN_POOL}, "lean": {"tiling": TILING, "model": lean}}
    config, defs = _setup(tmp_path, ROWS[:2], pipelines)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        for sample_id in ("a1", "a2"):
            assert _run(defs, instance, sample_id).success
        assert _run(defs, instance, "pa", patients=True).success
    kept, lean_out = config.output_dir("kept"), config.output_dir("lean")
    assert not (lean_out / "tile_embeddings").exists() and not (lean_out / "slide_embeddings").exists()
    torch.testing.assert_close(
        torch.load(lean_out / "patient_embeddings" / "pa.pt", weights_only=True),
        torch.load(kept / "patient_embeddings" / "pa.pt", weights_only=True),
    )
    assert (
        json.loads((lean_out / "patient_embeddings" / "pa.meta.json").read_text())["provenance"]["slide_embeddings"]
        == "computed in memory"
    )
    assert check_output_dir(lean_out) == []


class _FakeVirchow:
    """Test stand-in for virchow's 2560-d cls+patch-mean features (its weights cannot be downloaded here):
    the baseline's 70 real features of each tile, through a fixed deterministic projection."""

    weights_origin = "test projection of the baseline features"

    def __init__(self) -> None:
        self.baseline = load_encoder("baseline-color-texture", device="cpu")
        generator = torch.Generator().manual_seed(0)
        self.projection = torch.randn(BASELINE_FEATURE_DIM, 2560, generator=generator) / BASELINE_FEATURE_DIM**0.5

    def __call__(self, batch: np.ndarray) -> torch.Tensor:
        return self.baseline(batch) @ self.projection


def test_a_remote_code_slide_model_writes_latents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    repo = tmp_path / "prism"
    write_fake_remote_repo(repo, in_dim=2560, out_dim=1280, num_latents=512)
    model = {
        "name": "prism",
        "slide_weights": str(repo),
        "trust_remote_code": True,
        "revision": FAKE_REVISION,
        "save_latents": True,
    }
    config, defs = _setup(tmp_path, ROWS[:1], {"p": {"tiling": TILING, "model": model, "output_format": "npz"}})
    assert config.pipelines["p"].model.tile_encoder == "virchow"
    assert config.pipelines["p"].model.variant == "cls_patch_mean"
    monkeypatch.setattr(slide_embedding, "cached_encoder", lambda pipeline: _FakeVirchow())
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        result = _run(defs, instance, "a1")
        assert result.success
        assert instance.get_materialized_partitions(AssetKey(["p", "slide_latents"])) == {"a1"}
    out = config.output_dir("p")
    with np.load(out / "slide_embeddings" / "a1.npz") as archive:
        assert archive["features"].shape == (1280,)
    with np.load(out / "slide_latents" / "a1.npz") as archive:
        assert archive["latents"].shape == (512, 1280)
    assert not (out / "tile_embeddings").exists()  # slide2vec's default for slide models: not kept
    meta = json.loads((out / "slide_embeddings" / "a1.meta.json").read_text())
    assert meta["encoder_name"] == "prism" and meta["provenance"]["weights_revision"] == FAKE_REVISION
    assert len(meta["provenance"]["weights_sha256"]) == 64
    assert check_output_dir(out) == []


@pytest.mark.parametrize(
    ("model", "fragments"),
    [
        ({"name": "prism", "tile_encoder": "uni"}, ("'virchow'", "'uni'")),
        ({"name": "prism", "variant": "cls"}, ("cls_patch_mean",)),
        ({"name": "baseline-color-texture", "slide_encoder": "mean-pool", "save_latents": True}, ("no latents",)),
        ({"name": "prism"}, ("model.trust_remote_code", "model.revision")),
        ({"name": "mean-pool"}, ("model.tile_encoder",)),
        ({"name": "moozy", "slide_encoder": "mean-pool"}, ("moozy-slide",)),
        ({"name": "no-such-model"}, ("Unknown encoder",)),
    ],
    ids=["wrong-tile-encoder", "wrong-variant", "latents-without-latents", "remote-code-opt-in", "mean-pool-alone",
         "moozy-with-mean-pool-slides", "unknown"],
)  # fmt: skip
def test_a_model_block_that_cannot_work_is_refused_at_config_load(tmp_path: Path, model: dict, fragments: tuple):
    write_manifest(tmp_path / "cohort.csv", ROWS)
    path = tmp_path / "platform.yaml"
    raw = {"manifests": ["cohort.csv"], "pipelines": {"p": {"tiling": TILING, "model": model}}}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "pipelines.p" in str(info.value) and all(f in str(info.value) for f in fragments), str(info.value)


def test_hierarchical_tiling_is_refused_for_a_slide_model(tmp_path: Path):
    write_manifest(tmp_path / "cohort.csv", ROWS)
    path = tmp_path / "platform.yaml"
    tiling = {"params": {**TILING["params"], "region_tile_multiple": 2}}
    path.write_text(
        yaml.safe_dump({"manifests": ["cohort.csv"], "pipelines": {"p": {"tiling": tiling, "model": MEAN_POOL}}})
    )
    with pytest.raises(ConfigError, match="region_tile_multiple"):
        load_config(path)


def test_status_and_the_schedule_call_the_same_slide_embeddings_stale(tmp_path: Path):
    """A slide embedding whose recorded inputs differ from the current ones (here: written by another code
    version, same settings and coordinates) is due for the schedule and stale for status alike: the step
    would recompute it."""
    from slide2vec_dagster.defs.slides_asset import manifest_entries
    from slide2vec_dagster.layout import OutputLayout
    from slide2vec_dagster.staleness import due_samples
    from slide2vec_dagster.status import FileStaleness

    lean = {**MEAN_POOL, "save_tile_embeddings": False}
    config, defs = _setup(tmp_path, ROWS[:1], {"p": {"tiling": TILING, "model": lean}})
    layout = OutputLayout(config.output_dir("p"))
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert _run(defs, instance, "a1").success
    entries = manifest_entries(config)
    judge = FileStaleness(config, {entry.sample_id: entry for entry in entries})
    assert due_samples(config.pipelines["p"], layout, entries) == []
    assert judge("p", "slide_embeddings", "a1").state == "done"

    sidecar = layout.embedding_meta("slide_embeddings", "a1")
    meta = json.loads(sidecar.read_text())
    meta["provenance"]["inputs_fingerprint"] = "from-an-older-code-version"
    sidecar.write_text(json.dumps(meta))
    (due,) = due_samples(config.pipelines["p"], layout, entries)
    assert due.sample_id == "a1" and due.reason.startswith("stale: its inputs changed")
    verdict = FileStaleness(config, {entry.sample_id: entry for entry in entries})("p", "slide_embeddings", "a1")
    assert verdict.state == "stale" and verdict.reason.startswith("its inputs changed")


def test_a_patient_payload_failing_its_checks_is_withdrawn_recorded_and_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Like a slide's: a check failure is not something a retry mends (max_retries 2 here), the files go, and
    the partition carries the error where the UI shows it."""
    from slide2vec_dagster.artifacts import embeddings
    from slide2vec_dagster.layout import OutputLayout

    write_manifest(tmp_path / "cohort.csv", ROWS[2:])
    raw = {
        "manifests": ["cohort.csv"],
        "output_root": "out",
        "execution": {"max_retries": 2, "retry_delay_seconds": 0},
        "pipelines": {"p": {"tiling": TILING, "model": MEAN_POOL}},
    }
    (tmp_path / "platform.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "platform.yaml")
    defs = build_definitions(config)
    with instance_for_test() as instance:
        register(instance, read_manifests(config.manifests))
        assert _run(defs, instance, "b1").success
        real = embeddings.verify_vector

        def not_finite(*args, **kwargs):
            outcomes = real(*args, **kwargs)
            return [dataclasses.replace(o, passed=False) if o.name == "all_finite" else o for o in outcomes]

        monkeypatch.setattr(embeddings, "verify_vector", not_finite)
        result = _run(defs, instance, "pb", patients=True)
        assert not result.success
        retries = [
            e
            for e in instance.all_logs(result.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"
        ]
        assert retries == []
        observed = instance.fetch_observations(
            AssetRecordsFilter(asset_key=AssetKey(["p", "patient_embeddings"]), asset_partitions=["pb"]), limit=1
        ).records
        metadata = observed[0].asset_observation.metadata
        assert metadata["status"].value == "failed" and metadata["error"].value.startswith("EmbeddingCheckError:")
    layout = OutputLayout(config.output_dir("p"))
    assert not layout.embedding_meta("patient_embeddings", "pb").exists()
