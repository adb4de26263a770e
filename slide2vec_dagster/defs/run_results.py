"""What one slide's run did, read from the run's own events (never from the shared process list, which
a concurrent or later run may have changed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import ExecuteInProcessResult


@dataclass(frozen=True)
class RunOutcome:
    status: str  # done | skipped | failed
    error: str
    num_tiles: object
    encoder: str  # the encoders that ran, tile first ("baseline-color-texture + mean-pool")
    num_slides: object = None  # patient runs


def step_failure_message(data: Any) -> str | None:
    """A failed step's message: our steps put the slide's ``<Type>: <message>`` in the Failure's ``error``
    metadata; anything else has Dagster's error."""
    if data is None:
        return None
    user = data.user_failure_data
    if user is not None and "error" in user.metadata:
        return str(user.metadata["error"].value)
    return " ".join(data.error.message.split()) if data.error is not None else None


def run_outcome(result: ExecuteInProcessResult) -> RunOutcome:
    """``failed`` with the slide's error when a step failed; ``done`` when any asset was computed;
    ``skipped`` when every asset was already current."""
    statuses: list[str] = []
    num_tiles: object = "?"
    num_slides: object = None
    encoders: list[str] = []
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        if "status" in metadata:
            statuses.append(str(metadata["status"].value))
        if "num_tiles" in metadata and event.asset_key.path[-1] == "coordinates":
            num_tiles = metadata["num_tiles"].value
        if "num_slides" in metadata:
            num_slides = metadata["num_slides"].value
        if "encoder" in metadata and str(metadata["encoder"].value) not in encoders:
            encoders.append(str(metadata["encoder"].value))
    encoder = " + ".join(encoders)
    if not result.success:
        errors = [m for f in result.get_step_failure_events() if (m := step_failure_message(f.step_failure_data))]
        error = "; ".join(errors) or "the run failed before its steps started"
        return RunOutcome("failed", error, num_tiles, encoder, num_slides)
    status = "done" if "done" in statuses or not statuses else "skipped"
    return RunOutcome(status, "", num_tiles, encoder, num_slides)
