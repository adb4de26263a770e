"""The platform config and manifests, as a Dagster resource."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from dagster import ConfigurableResource

from slide2vec_dagster.config import PlatformConfig, load_config
from slide2vec_dagster.layout import OutputLayout
from slide2vec_dagster.manifest import ManifestReport, SlideEntry, find_slide, inspect_manifest, read_manifests


class SampleNotInManifestError(LookupError):
    """A registered partition whose row has left every manifest (rows are never deleted from Dagster)."""


@lru_cache(maxsize=8)
def _cached_config(path: str, mtime_ns: int) -> PlatformConfig:
    return load_config(path)


@lru_cache(maxsize=8)
def _cached_slides(paths: tuple[str, ...], stamps: tuple[tuple[int, int], ...]) -> dict[str, SlideEntry]:
    return read_manifests([Path(p) for p in paths])


@lru_cache(maxsize=8)
def _cached_reports(paths: tuple[str, ...], stamps: tuple[tuple[int, int], ...]) -> tuple[ManifestReport, ...]:
    return tuple(inspect_manifest(Path(p)) for p in paths)


def manifest_stamps(paths: list[Path]) -> tuple[tuple[int, int], ...]:
    """(mtime_ns, size) per manifest; (-1, -1) for a missing one so its later arrival is noticed."""
    stamps = []
    for path in paths:
        try:
            stat = path.stat()
            stamps.append((stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            stamps.append((-1, -1))
    return tuple(stamps)


def manifest_reports(manifests: list[Path]) -> tuple[ManifestReport, ...]:
    """The manifests' reports, parsed once per (mtime, size) of the files in this process: a slide's run, a
    sensor tick or a long-lived worker does not parse a large manifest again for every slide."""
    return _cached_reports(tuple(str(p) for p in manifests), manifest_stamps(manifests))


class PlatformResource(ConfigurableResource):
    """Gives assets the validated platform config and the slides of its manifests."""

    config_path: str

    def config(self) -> PlatformConfig:
        path = Path(self.config_path)
        return _cached_config(str(path), path.stat().st_mtime_ns)

    def slides(self) -> dict[str, SlideEntry]:
        manifests = self.config().manifests
        return _cached_slides(tuple(str(p) for p in manifests), manifest_stamps(manifests))

    def slide(self, sample_id: str) -> SlideEntry:
        """The slide's own row, checked. Other rows' problems (a typo appended during a backfill) and
        file-level problems that do not involve this slide are the registration's business, not its."""
        manifests = self.config().manifests
        entry = find_slide(manifest_reports(manifests), sample_id)
        if entry is None:
            raise SampleNotInManifestError(
                f"sample_id {sample_id!r} is registered in Dagster but no longer in any manifest "
                f"({', '.join(str(p) for p in manifests)}); add its row back to process it "
                "(removing a row never deletes outputs)"
            )
        return entry

    def patient_members(self, patient_id: str) -> list[SlideEntry]:
        """The slides of one patient, in manifest order (manifests in config order, rows in file order)."""
        reports = manifest_reports(self.config().manifests)
        return [entry for report in reports for entry in report.entries if entry.patient_id == patient_id]

    def layout(self, pipeline: str) -> OutputLayout:
        return OutputLayout(self.config().output_dir(pipeline))
