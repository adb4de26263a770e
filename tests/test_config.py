"""Platform config (slide2vec_dagster.config): validation, path resolution, the resolved config.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from slide2vec_dagster.artifacts.config_file import write_config_yaml
from slide2vec_dagster.config import (
    CONFIG_ENV_VAR,
    ConfigError,
    PipelineConfig,
    PlatformConfig,
    default_config_path,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo" / "config.yaml"

MINIMAL = {
    "manifests": ["cohort.csv"],
    "pipelines": {"p1": {"tiling": {"params": {"requested_spacing_um": 0.5, "requested_tile_size_px": 224}}}},
}


def _write(folder: Path, content: dict | str, name: str = "platform.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content), encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message, message
    return message


def test_the_demo_config_loads():
    config = load_config(DEMO)
    assert isinstance(config, PlatformConfig)
    assert config.source_path == DEMO
    assert config.manifests == [REPO / "demo" / "cohort.csv"]
    assert config.output_root == REPO / "outputs"
    assert "demo" in config.pipelines
    assert config.pipelines["demo"].tiling.params.requested_tile_size_px == 224
    assert config.output_dir("demo") == REPO / "outputs" / "demo"


def test_default_config_path_is_the_env_var_or_the_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)
    assert default_config_path() == DEMO
    monkeypatch.setenv(CONFIG_ENV_VAR, str(tmp_path / "x.yaml"))
    assert default_config_path() == tmp_path / "x.yaml"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "conf" / "site"
    raw = {
        "manifests": ["cohort.csv", "../other/cohort2.csv", str(tmp_path / "abs.csv")],
        "output_root": "../../outputs",
        "pipelines": {
            "p1": {"model": {"name": "baseline-color-texture"}},
            "p2": {"output_dir": "custom/p2", "model": {"name": "baseline-color-texture"}},
            "p3": {"output_dir": str(tmp_path / "elsewhere"), "model": {"name": "baseline-color-texture"}},
        },
    }
    _write(folder, raw)
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    config = load_config(Path("conf/site/platform.yaml"))
    assert config.manifests == [
        folder / "cohort.csv",
        tmp_path / "conf" / "other" / "cohort2.csv",
        tmp_path / "abs.csv",
    ]
    assert config.output_root == tmp_path / "outputs"
    assert config.output_dir("p1") == tmp_path / "outputs" / "p1"
    assert config.output_dir("p2") == folder / "custom" / "p2"
    assert config.output_dir("p3") == tmp_path / "elsewhere"


def test_read_coordinates_from_must_name_a_pipeline_or_a_folder(tmp_path: Path):
    raw = {**MINIMAL, "pipelines": {"p1": {**MINIMAL["pipelines"]["p1"]}}}
    raw["pipelines"]["p1"]["tiling"] = {**raw["pipelines"]["p1"]["tiling"], "read_coordinates_from": "old/tiles"}
    message = _error(_write(tmp_path, raw))
    assert "pipelines.p1.tiling.read_coordinates_from" in message
    assert "neither a pipeline of this config" in message and str(tmp_path / "old" / "tiles") in message


def test_a_pipeline_without_tile_geometry_or_model_is_refused(tmp_path: Path):
    message = _error(_write(tmp_path, {"manifests": ["m.csv"], "pipelines": {"bare": {}}}))
    assert "pipelines.bare" in message and "requested_spacing_um" in message


def test_the_model_preset_fills_the_tile_geometry(tmp_path: Path):
    raw = {"manifests": ["m.csv"], "pipelines": {"p": {"model": {"name": "UNI"}}}}
    pipeline = load_config(_write(tmp_path, raw)).pipelines["p"]
    assert pipeline.model.name == "uni"
    assert (pipeline.tiling.params.requested_spacing_um, pipeline.tiling.params.requested_tile_size_px) == (0.5, 224)
    assert pipeline.speed.precision == "fp16"


def test_an_unknown_model_or_bf16_storage_is_refused(tmp_path: Path):
    unknown = _error(_write(tmp_path, {"manifests": ["m.csv"], "pipelines": {"p": {"model": {"name": "nope"}}}}))
    assert "pipelines.p" in unknown and "nope" in unknown
    raw = {**MINIMAL, "pipelines": {"p1": {**MINIMAL["pipelines"]["p1"], "speed": {"output_dtype": "bf16"}}}}
    assert "pipelines.p1.speed.output_dtype" in _error(_write(tmp_path, raw))


@pytest.mark.parametrize(
    ("mutate", "dotted"),
    [
        (lambda raw: raw.update(output_rot="x"), "output_rot"),
        (lambda raw: raw["pipelines"]["p1"].update(tilling={}), "pipelines.p1.tilling"),
        (
            lambda raw: raw["pipelines"]["p1"]["tiling"]["params"].update(tile_size=3),
            "pipelines.p1.tiling.params.tile_size",
        ),
        (
            lambda raw: raw["pipelines"]["p1"]["tiling"].update(seg_params={"methd": "otsu"}),
            "pipelines.p1.tiling.seg_params.methd",
        ),
        (lambda raw: raw.update(execution={"sensor_interval": 3}), "execution.sensor_interval"),
    ],
)
def test_an_unknown_key_is_named_with_its_dotted_path_and_the_file(tmp_path: Path, mutate, dotted: str):
    raw = yaml.safe_load(yaml.safe_dump(MINIMAL))
    mutate(raw)
    message = _error(_write(tmp_path, raw))
    assert f"{dotted}: unknown key" in message


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (
            lambda raw: raw["pipelines"]["p1"]["tiling"]["params"].update(requested_spacing_um=-1),
            "requested_spacing_um",
        ),
        (lambda raw: raw["pipelines"]["p1"]["tiling"].update(backend="pillow"), "pipelines.p1.tiling.backend"),
        (lambda raw: raw.update(manifests=[]), "manifests"),
        (lambda raw: raw.update(pipelines={}), "pipelines"),
        (lambda raw: raw.pop("manifests"), "manifests"),
        (lambda raw: raw.update(execution={"sensor_interval_seconds": 1}), "execution.sensor_interval_seconds"),
    ],
)
def test_invalid_values_are_named(tmp_path: Path, mutate, fragment: str):
    raw = yaml.safe_load(yaml.safe_dump(MINIMAL))
    mutate(raw)
    assert fragment in _error(_write(tmp_path, raw))


@pytest.mark.parametrize("name", ["1st", "with-dash", "with space", "_private", "dotted.name", ""])
def test_pipeline_names_must_be_identifiers(tmp_path: Path, name: str):
    raw = {"manifests": ["m.csv"], "pipelines": {name: {}}}
    message = _error(_write(tmp_path, raw))
    assert repr(name) in message and "must start with a letter" in message


@pytest.mark.parametrize("name", ["p", "demo", "Uni2_h", "a1_b2"])
def test_valid_pipeline_names(tmp_path: Path, name: str):
    raw = {"manifests": ["m.csv"], "pipelines": {name: {"model": {"name": "baseline-color-texture"}}}}
    config = load_config(_write(tmp_path, raw))
    assert list(config.pipelines) == [name]


@pytest.mark.parametrize("text", ["manifests: [a\npipelines: {", "a: b: c\n", "\tmanifests: x\n"])
def test_bad_yaml_is_a_config_error(tmp_path: Path, text: str):
    assert "not valid YAML" in _error(_write(tmp_path, text))


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just a string\n"])
def test_a_config_that_is_not_a_mapping_is_a_config_error(tmp_path: Path, text: str):
    assert "must be a mapping" in _error(_write(tmp_path, text))


def test_a_missing_config_file_is_a_config_error(tmp_path: Path):
    message = _error(tmp_path / "absent.yaml")
    assert "not found" in message and CONFIG_ENV_VAR in message


def test_resolved_pipeline_round_trips_as_a_configuration(tmp_path: Path):
    """config.yaml holds resolved_pipeline(): it must load again, unchanged, as a PipelineConfig."""
    config = load_config(DEMO)
    for name in config.pipelines:
        block = config.resolved_pipeline(name)
        assert block["output_dir"] == str(config.output_dir(name))
        assert block["tiling"]["filter_params"]["ref_tile_size"] == 224  # interpolated default filled in
        again = PipelineConfig.model_validate(block)
        assert again.model_dump(mode="json") == block
        assert again.fingerprint() == config.pipelines[name].fingerprint()
        # ... and through the YAML file the pipeline writes.
        path = tmp_path / name / "config.yaml"
        write_config_yaml(path, block)
        from_file = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert from_file == block
        assert PipelineConfig.model_validate(from_file).model_dump(mode="json") == block


def test_resolved_pipeline_fills_every_default(tmp_path: Path):
    raw = {"manifests": ["m.csv"], "pipelines": {"bare": {"model": {"name": "baseline-color-texture"}}}}
    config = load_config(_write(tmp_path, raw))
    block = config.resolved_pipeline("bare")
    defaults = PipelineConfig().model_dump(mode="json")
    assert set(block) == set(defaults)
    assert set(block["tiling"]) == set(defaults["tiling"])
    for section, values in defaults["tiling"].items():
        if isinstance(values, dict):
            assert set(block["tiling"][section]) == set(values), section
    assert PipelineConfig.model_validate(block).model_dump(mode="json") == block


def test_the_fingerprint_follows_the_tiling_not_the_output_dir():
    base = PipelineConfig.model_validate({"tiling": {"params": {"requested_spacing_um": 0.5}}})
    moved = base.model_copy(update={"output_dir": Path("/elsewhere")})
    changed = PipelineConfig.model_validate({"tiling": {"params": {"requested_spacing_um": 1.0}}})
    assert base.fingerprint() == moved.fingerprint()
    assert base.fingerprint() != changed.fingerprint()
