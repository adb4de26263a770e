"""Writers and readers of every artifact file (payloads, sidecars, previews, process list, config)."""
