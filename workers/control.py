"""A remote-control command of the workers, asked by the sweeper (workers.inflight): which tasks
a worker holds. Celery's own `inspect active/reserved/scheduled` answer with each task's
arguments (a classification's ICI travels in them), three broadcasts a look; this answers with
the task ids and their images only, in one."""

from __future__ import annotations

from celery.worker import control

from workers.inflight import image_of_args


@control.inspect_command()
def held_tasks(state, **_kwargs) -> list[list[str | None]]:
    """[task id, image id] of every task this worker holds: running, prefetched, or waiting for
    its retry countdown. The image is the task's first string argument, as in its message."""
    requests = control.active(state) + control.reserved(state)
    requests += [entry["request"] for entry in control.scheduled(state)]
    return [[request["id"], image_of_args(request.get("args"))] for request in requests]
