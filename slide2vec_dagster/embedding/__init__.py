"""Batched tile reading and inference (plain torch, no Dagster)."""
