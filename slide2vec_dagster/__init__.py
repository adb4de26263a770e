"""slide2vec-dagster: slide2vec's whole-slide embedding pipeline as partitioned Dagster assets."""

__version__ = "0.1.0"
