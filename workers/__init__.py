"""Celery workers: the app and its queues (`app`: segment, classify, assemble), the tasks that run
the pipeline stage by stage on a case's images (`tasks`), the models loaded once per worker
process (`runtime`) and the sweeper that re-enqueues stuck cases (`sweeper`).

Imports the core (`karyoflow`), the runtime config (`infra`) and the database layer (`db`);
none of them imports this package."""
