"""The Dagster layer: partitions, resources, IO managers, assets and sensors. Thin and declarative;
the work is done by the plain-Python domain modules."""
