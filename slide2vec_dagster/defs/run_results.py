"""What one slide's run did, read from the run's own events (never from the shared process list, which
a concurrent or later run may have changed)."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import ExecuteInProcessResult


@dataclass(frozen=True)
class RunOutcome:
    status: str  # done | skipped | failed
    error: str
    num_tiles: object
    encoder: str


def run_outcome(result: ExecuteInProcessResult) -> RunOutcome:
    """``failed`` with the slide's error when a step failed; ``done`` when any asset was computed;
    ``skipped`` when every asset was already current."""
    statuses: list[str] = []
    num_tiles: object = "?"
    encoder = ""
    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        if "status" in metadata:
            statuses.append(str(metadata["status"].value))
        if "num_tiles" in metadata and event.asset_key.path[-1] == "coordinates":
            num_tiles = metadata["num_tiles"].value
        if "encoder" in metadata:
            encoder = str(metadata["encoder"].value)
    if not result.success:
        errors = []
        for failure in result.get_step_failure_events():
            data = failure.step_failure_data
            user = data.user_failure_data
            if user is not None and "error" in user.metadata:
                errors.append(str(user.metadata["error"].value))
            elif data.error is not None:
                errors.append(" ".join(data.error.message.split()))
        return RunOutcome("failed", "; ".join(errors) or "the run failed before its steps started", num_tiles, encoder)
    status = "done" if "done" in statuses or not statuses else "skipped"
    return RunOutcome(status, "", num_tiles, encoder)
