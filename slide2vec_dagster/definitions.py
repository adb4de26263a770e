"""Code location entry point (workspace.yaml): the platform config named by $SLIDE2VEC_DAGSTER_CONFIG,
or the demo config shipped with the repository."""

from slide2vec_dagster.config import default_config_path, load_config
from slide2vec_dagster.defs.build import build_definitions

defs = build_definitions(load_config(default_config_path()))
