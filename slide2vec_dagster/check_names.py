"""The names of the blocking checks run on written payloads (shared by the writers and the Dagster layer,
which must declare them without importing torch)."""

EMBEDDING_CHECKS = (
    "rows_match_coordinates",
    "all_finite",
    "feature_dim_matches_registry",
    "dtype_matches_feature_dtype",
)
VECTOR_CHECKS = (
    "shape_is_one_vector",
    "all_finite",
    "feature_dim_matches_registry",
    "dtype_matches_feature_dtype",
)
