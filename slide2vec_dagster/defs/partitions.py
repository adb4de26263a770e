"""Dynamic partitions: one per slide (``sample_id``) and one per patient (``patient_id``)."""

from __future__ import annotations

from dagster import DagsterInstance, DynamicPartitionsDefinition

from slide2vec_dagster.manifest import SlideEntry, patients_of

sample_partitions = DynamicPartitionsDefinition(name="sample_id")
patient_partitions = DynamicPartitionsDefinition(name="patient_id")

# SQLite failed at ~36k dynamic keys added in one call on these machines: add in chunks.
_CHUNK = 5_000


def unregistered(
    instance: DagsterInstance, slides: dict[str, SlideEntry], known_samples: set[str] | None = None
) -> tuple[list[str], list[str]]:
    """(new sample ids, new patient ids) in manifest order, not yet known to ``instance`` (``known_samples``:
    the registered sample ids when the caller has just read them: one query less over 100,000 keys)."""
    if known_samples is None:
        known_samples = set(instance.get_dynamic_partitions(sample_partitions.name))
    known_patients = set(instance.get_dynamic_partitions(patient_partitions.name))
    new_samples = [sid for sid in slides if sid not in known_samples]
    new_patients = [pid for pid in patients_of(slides) if pid not in known_patients]
    return new_samples, new_patients


def register(
    instance: DagsterInstance, slides: dict[str, SlideEntry], known_samples: set[str] | None = None
) -> tuple[list[str], list[str]]:
    """Add the manifests' new ids to the instance (the cohort sensor, the CLI)."""
    new_samples, new_patients = unregistered(instance, slides, known_samples)
    for name, keys in ((sample_partitions.name, new_samples), (patient_partitions.name, new_patients)):
        for start in range(0, len(keys), _CHUNK):
            instance.add_dynamic_partitions(name, keys[start : start + _CHUNK])
    return new_samples, new_patients
