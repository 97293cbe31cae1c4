"""Locust traffic for Weather Tweets, shaped like the seed's `traffic.py`.

Every record of the data file (a JSON array, `weathertweets gen-data` writes one) is posted to
`/input` exactly once, in random order, by whichever user draws it; users sometimes read the
stats; when the file is used up each user stops, and the run ends by itself.

    locust -f locustfile.py --headless -u 10 -r 10 -H http://127.0.0.1:8080

Settings: WT_LOCUST_DATA (default data.json), WT_LOCUST_STATS_WEIGHT (default 1 GET per
9 POSTs), WT_LOCUST_WORKERS (distributed runs: how many workers share the file), WT_API_KEY
(the bearer key of a deployment that requires one).
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, between, events, task
from locust.exception import StopUser
from locust.runners import WorkerRunner

from weathertweets.client import TWEET_PATH, write_headers

log = logging.getLogger("weathertweets.locust")


class Reader:
    """The records of the data file, each handed out once, at random.

    Distributed runs: worker i of WT_LOCUST_WORKERS takes every record whose index is i modulo
    that count, so the workers share the file instead of each sending all of it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = json.loads(path.read_text(encoding="utf-8"))
        self._sharded = False

    def shard(self, index: int, count: int) -> None:
        if self._sharded:
            return
        self._sharded = True
        if count > 1:
            self.records = self.records[index::count]
        log.info("%d records to send from %s", len(self.records), self.path)

    def pick(self) -> dict[str, Any] | None:
        if not self.records:
            return None
        index = random.randrange(len(self.records))
        self.records[index], self.records[-1] = self.records[-1], self.records[index]
        return self.records.pop()


reader = Reader(Path(os.environ.get("WT_LOCUST_DATA", "data.json")))
API_KEY = os.environ.get("WT_API_KEY") or None


class WeatherTweeter(HttpUser):
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        runner = self.environment.runner
        workers = int(os.environ.get("WT_LOCUST_WORKERS", "1"))
        reader.shard(getattr(runner, "worker_index", 0), workers)

    @task(9)
    def post_tweet(self) -> None:
        record = reader.pick()
        if record is None:
            raise StopUser()
        # One Idempotency-Key per tweet (and the bearer key of a keyed deployment), built by
        # weathertweets.client as every client of ours does.
        headers = write_headers(API_KEY)
        self.client.post(TWEET_PATH, json=record, headers=headers, name=TWEET_PATH)

    @task(int(os.environ.get("WT_LOCUST_STATS_WEIGHT", "1")))
    def read_stats(self) -> None:
        if not reader.records:
            raise StopUser()
        headers = {"authorization": f"Bearer {API_KEY}"} if API_KEY else {}
        self.client.get("/api/v1/stats", name="/api/v1/stats", headers=headers)


@events.init.add_listener
def quit_when_done(environment: Any, **_: Any) -> None:
    """End the run once every user has stopped by itself (the data is used up)."""
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner):
        return  # a worker's users stop; the master (or the local runner) ends the run

    def watch() -> None:
        had_users = False
        while True:
            gevent.sleep(0.5)
            if runner.user_count > 0:
                had_users = True
            elif had_users:
                log.warning("every user stopped: the data is used up; quitting")
                runner.quit()
                return

    gevent.spawn(watch)
