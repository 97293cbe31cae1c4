"""The archiver: broker → store, every tweet with the time it was archived; and, when an
archive retention is set, the deletion of what is older."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from weathertweets.domain import Tweet, utcnow
from weathertweets.metrics import ARCHIVE_EXPIRED
from weathertweets.ports import ArchivedTweet, BackendUnavailable, Message, Store
from weathertweets.services.consuming import Sink

GROUP = "archiver"
EXPIRY_INTERVAL = 600.0  # seconds between archive retention passes
log = logging.getLogger("weathertweets.archiver")


def archive_sink(store: Store) -> Sink:
    async def sink(batch: list[tuple[Message, Tweet]]) -> None:
        if batch:
            archived_at = utcnow()
            await store.archive([ArchivedTweet(tweet, archived_at) for _, tweet in batch])

    return sink


async def expire_forever(store: Store, keep: timedelta, interval: float = EXPIRY_INTERVAL) -> None:
    """Every `interval` seconds, delete the archived tweets received more than `keep` ago."""
    while True:
        try:
            gone = await store.expire(utcnow() - keep)
        except BackendUnavailable as error:
            log.warning("archive retention: %s; retrying in %g s", error, interval)
        else:
            if gone:
                ARCHIVE_EXPIRED.inc(gone)
                log.info("archive retention: deleted %d tweets older than %s", gone, keep)
        await asyncio.sleep(interval)
