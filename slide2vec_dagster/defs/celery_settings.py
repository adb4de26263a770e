"""Celery settings shared by the runs' executor (defs/build.py) and the workers' app (defs/celery_app.py).

Acknowledged when done: a task whose worker dies (``kill -9``, out of memory) is delivered again to another
worker instead of being lost (the partition lock keeps one writer per slide). One task at a time per worker
process: slides are long, and prefetching would only keep tasks from idle workers. Started tasks are
recorded so that the daemon's run monitoring can tell a running run worker from a lost one.
"""

RELIABLE = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
    "task_track_started": True,
}
