"""A Locust file shaped like the original system's `traffic.py` (its manual, section LOCUS).

Kept as the original's users have it: a reader that pops random records from `data.json`, one
user class whose tasks `POST /` the record as JSON and `GET /`, and a user that stops when the
data runs out. Pointed at `http://<host>/insert` (as the manual's ingress setup does), Locust
sends those requests to `/insert/`. Two changes, both for a bounded test: shorter waits, and
the run ends once every user has stopped.
"""

from __future__ import annotations

import json
import os
from random import randrange
from typing import Any

import gevent
from locust import HttpUser, between, events, task


class Reader:
    def __init__(self) -> None:
        self.array: list[dict[str, Any]] = []

    def pick_random(self) -> dict[str, Any] | None:
        length = len(self.array)
        if length > 0:
            index = randrange(0, length - 1) if length > 1 else 0
            return self.array.pop(index)
        return None

    def load(self) -> None:
        with open(os.environ.get("SEED_DATA", "data.json"), encoding="utf-8") as data_file:
            self.array = json.loads(data_file.read())


class MessageTraffic(HttpUser):
    wait_time = between(0.01, 0.05)
    reader = Reader()
    reader.load()

    @task
    def post_message(self) -> None:
        random_data = self.reader.pick_random()
        if random_data is not None:
            self.client.post("/", json=random_data)
        else:
            self.stop(True)

    @task
    def get_message(self) -> None:
        self.client.get("/")


@events.init.add_listener
def quit_when_every_user_stopped(environment: Any, **_: Any) -> None:
    runner = environment.runner

    def watch() -> None:
        started = False
        while True:
            gevent.sleep(0.3)
            started = started or runner.user_count > 0
            if started and runner.user_count == 0:
                runner.quit()
                return

    if runner is not None:
        gevent.spawn(watch)
