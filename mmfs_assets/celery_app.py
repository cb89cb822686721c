"""The Celery app MMFS's step workers run: ``celery -A mmfs_assets.celery_app worker -Q dagster``.

dagster-celery's own ``dagster-celery worker start -y config.yaml`` writes the resolved broker URL
(password included) into a module under ``$DAGSTER_HOME``; this app reads ``MMFS_CELERY_BROKER`` and
``MMFS_CELERY_BACKEND`` from the worker's environment instead, so no secret is written anywhere. Its tasks
and queue are dagster-celery's, so it serves runs launched with ``MMFS_EXECUTOR=celery``.
"""

from __future__ import annotations

import os

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

if not os.environ.get("MMFS_CELERY_BROKER"):
    raise RuntimeError("MMFS_CELERY_BROKER is not set: the worker needs the broker the runs use, e.g. redis://host:6379/0")

app = make_app({"broker": os.environ["MMFS_CELERY_BROKER"], "backend": os.environ.get("MMFS_CELERY_BACKEND", "rpc://")})
app.conf.worker_prefetch_multiplier = 1  # a step is long: a worker takes the next one only when it is free
app.conf.task_acks_late = True  # a worker killed mid-step leaves the task for another worker

execute_plan = create_task(app)
execute_job = create_execute_job_task(app)
resume_job = create_resume_job_task(app)
