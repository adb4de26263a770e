"""The Dagster UI in a real browser: the CLI materialises a small cohort with the demo's pipelines into a fresh
DAGSTER_HOME, `dagster dev` serves it on 127.0.0.1, and headless Chromium (Debian's `chromium`, driven by
Playwright) checks what a person sees: the asset graph shows every pipeline and its assets, an asset's
partitions page lists the slides (the patient asset's, the patients), and a mask preview materialisation's
metadata shows the preview image.

Screenshots go to a temporary folder; to refresh the ones under docs/ui/, run
    SLIDE2VEC_UI_SCREENSHOTS=docs/ui .venv/bin/python -m pytest tests/test_ui_browser.py
The test skips only where no Chromium binary is found ($SLIDE2VEC_CHROMIUM, or chromium on PATH);
.ci/run installs Debian's chromium with apt-get when it is missing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.dagster_helpers import DATA, write_manifest
from tests.ui_helpers import (
    CHROMIUM_ARGS,
    CHROMIUM_ENV_VAR,
    dagster_dev,
    find_chromium,
    fit_graph,
    graph_placement,
    graphql,
)

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = find_chromium()
SCREENSHOTS_ENV_VAR = "SLIDE2VEC_UI_SCREENSHOTS"
TIMEOUT_MS = 60_000  # the machine is slow: first loads of the UI take seconds

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason=(
            f"no Chromium binary found (${CHROMIUM_ENV_VAR}, else chromium / chromium-browser / google-chrome on "
            "PATH); on Debian: apt-get install chromium, as .ci/run does"
        ),
    ),
]

# Two slides of two patients: every partitions page has more than one row, and the patient level has work.
ROWS = [
    {
        "sample_id": "cmu-1-small-region",
        "image_path": str(DATA / "CMU-1-Small-Region.svs"),
        "patient_id": "patient-cmu",
    },
    {
        "sample_id": "synthetic-he",
        "image_path": str(DATA / "synthetic-he-0.5mpp.tiff"),
        "patient_id": "patient-synthetic",
    },
]
SAMPLES = [row["sample_id"] for row in ROWS]
PATIENTS = [row["patient_id"] for row in ROWS]


@dataclass
class UI:
    base_url: str
    browser: Browser
    groups: dict[str, set[str]]  # pipeline (asset group) -> its asset names
    patient_pipeline: str
    preview_pipeline: str
    screenshots: Path

    def open(self, path: str) -> Page:
        """A page in a fresh browser context (the UI keeps layout choices in local storage)."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(self.base_url + path, wait_until="domcontentloaded")
        return page

    def shoot(self, page: Page, name: str) -> None:
        expect(community_dialog(page)).to_be_hidden()
        page.wait_for_timeout(700)  # let the last fetch render and transitions end
        page.screenshot(path=str(self.screenshots / name))
        page.context.close()


def community_dialog(page: Page):
    return page.get_by_role("dialog").filter(has_text="Join the Dagster community")


def _write_config(folder: Path) -> Path:
    """The demo's pipelines (demo/config.yaml) on a two-slide cohort, writing under `folder`."""
    demo = yaml.safe_load((REPO / "demo" / "config.yaml").read_text(encoding="utf-8"))
    pipelines = {
        name: {k: v for k, v in block.items() if k != "output_dir"} for name, block in demo["pipelines"].items()
    }
    write_manifest(folder / "cohort.csv", ROWS)
    path = folder / "platform.yaml"
    config = {"manifests": ["cohort.csv"], "output_root": "outputs", "pipelines": pipelines}
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _expected_groups(config_path: Path) -> tuple[dict[str, set[str]], str, str]:
    """Pipeline -> its materialisable asset names, from the definitions the code location builds; and a
    pipeline with a patient level and one with mask previews."""
    from slide2vec_dagster.config import load_config
    from slide2vec_dagster.defs.build import build_definitions

    config = load_config(config_path)
    graph = build_definitions(config).resolve_asset_graph()
    groups: dict[str, set[str]] = {name: set() for name in config.pipelines}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.is_materializable and key.path[0] in groups:
            groups[key.path[0]].add(key.path[-1])
    patient = next(name for name, names in groups.items() if "patient_embeddings" in names)
    preview = next(name for name, names in groups.items() if "mask_preview" in names)
    return groups, patient, preview


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("ui")
    config_path = _write_config(folder)
    env = dict(os.environ, DAGSTER_HOME=str(folder / "dagster_home"), SLIDE2VEC_DAGSTER_CONFIG=str(config_path))
    materialize = subprocess.run(
        [sys.executable, "-m", "slide2vec_dagster.cli", "materialize", "--config", str(config_path)],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert materialize.returncode == 0, materialize.stdout + materialize.stderr
    groups, patient_pipeline, preview_pipeline = _expected_groups(config_path)
    screenshots = Path(os.environ.get(SCREENSHOTS_ENV_VAR) or folder / "screenshots").absolute()
    screenshots.mkdir(parents=True, exist_ok=True)

    with (
        dagster_dev(
            workspace=REPO / "workspace.yaml",
            env=env,
            cwd=folder,
            log_path=folder / "dagster_dev.log",
            expected_assets=sum(len(names) for names in groups.values()),
        ) as port,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            expect.set_options(timeout=TIMEOUT_MS)
            ui = UI(f"http://127.0.0.1:{port}", browser, groups, patient_pipeline, preview_pipeline, screenshots)
            # A fresh DAGSTER_HOME: the UI opens its "Join the Dagster community" dialog over the first page
            # (until $DAGSTER_HOME/.nux says it was seen). Skip it once, as a person would.
            if graphql(port, "{ shouldShowNux }")["data"]["shouldShowNux"]:
                page = ui.open("/asset-groups")
                community_dialog(page).get_by_role("button", name="Skip").click()
                expect(community_dialog(page)).to_be_hidden()
                page.context.close()
            yield ui
        finally:
            browser.close()


def test_asset_graph_shows_every_pipeline_and_its_assets(ui: UI):
    page = ui.open("/asset-groups")
    for group in ui.groups:
        expect(page.get_by_text(group, exact=True).first).to_be_visible()
    # Expand every group and lay the graph out top-down (graph settings menu), hide the sidebar tree.
    for item in ("Expand all groups", "Change graph to vertical orientation"):
        page.get_by_role("button", name="settings", exact=True).click()
        page.get_by_role("menuitem", name=item).click()
        page.keyboard.press("Escape")
    expect(page.get_by_text("tile_embeddings", exact=True).first).to_be_visible()
    page.get_by_role("button", name="panel_show_right", exact=True).click()
    page.get_by_role("button", name="Hide navigation").click()
    toolbar = page.get_by_role("button", name=re.compile(r"Materialize all")).bounding_box()
    fit_graph(page, toolbar_bottom=toolbar["y"] + toolbar["height"])

    shown: dict[str, set[str]] = {}
    for group, label in graph_placement(page):
        shown.setdefault(group, set()).add(_full_name(label, ui.groups.get(group, set())))
    # Every pipeline is a group holding exactly its assets (the `cohort` group of the slides is no pipeline).
    assert {group: shown.get(group) for group in ui.groups} == ui.groups, f"the asset graph shows {shown}"
    ui.shoot(page, "ui-asset-graph.png")


def _full_name(label: str, names: set[str]) -> str:
    """The graph shortens long names in the middle (`hierar…_embeddings`): the one of `names` it stands for."""
    if "…" not in label:
        return label
    head, tail = label.split("…", 1)
    matches = [n for n in names if n.startswith(head) and n.endswith(tail) and len(n) > len(head) + len(tail)]
    return matches[0] if len(matches) == 1 else label


def _check_partitions_page(ui: UI, asset: str, keys: list[str], screenshot: str) -> None:
    page = ui.open(f"/assets/{asset}?view=partitions")
    expect(page.get_by_text(f"Materialized ({len(keys)})")).to_be_visible()
    expect(page.get_by_text("No partition selected")).to_be_visible()
    for key in keys:  # nothing is selected yet: each key on the page is a row of the partition list
        expect(page.get_by_text(key, exact=True).first).to_be_visible()
    # Select the last partition: its latest materialisation and metadata open beside the list.
    page.get_by_text(keys[-1], exact=True).first.click()
    expect(page.get_by_text("No partition selected")).to_be_hidden()
    expect(page.get_by_text("Latest materialization")).to_be_visible()
    expect(page.get_by_text("Materialized", exact=True).first).to_be_visible()
    expect(page.get_by_text("Metadata", exact=True)).to_be_visible()
    expect(page.get_by_text("No metadata entries")).to_be_hidden()
    ui.shoot(page, screenshot)


def test_partitions_page_lists_the_slides(ui: UI):
    pipeline = next(iter(ui.groups))
    _check_partitions_page(ui, f"{pipeline}/coordinates", SAMPLES, "ui-coords-partition.png")


def test_patient_partitions_page_lists_the_patients(ui: UI):
    patients = sorted(set(PATIENTS))
    _check_partitions_page(ui, f"{ui.patient_pipeline}/patient_embeddings", patients, "ui-patients-partition.png")


def test_mask_preview_metadata_shows_the_image(ui: UI):
    sample = SAMPLES[-1]
    page = ui.open(f"/assets/{ui.preview_pipeline}/mask_preview?view=partitions&partition={sample}")
    expect(page.get_by_text("preview", exact=True)).to_be_visible()  # the metadata entry's label
    page.get_by_text("[Show Markdown]").click()
    dialog = page.get_by_role("dialog").filter(has_text="preview")
    image = dialog.locator("img")
    expect(image).to_have_count(1)
    expect(image).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    expect(image).to_have_attribute("alt", re.compile(re.escape(sample)))
    width, height = image.evaluate("e => e.decode().then(() => [e.naturalWidth, e.naturalHeight])")
    assert width > 16 and height > 16, f"the preview image decoded to {width} x {height} px"
    ui.shoot(page, "ui-mask-md.png")
