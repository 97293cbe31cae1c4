"""The archiver: broker → store, every tweet with the time it was archived."""

from __future__ import annotations

from weathertweets.domain import Tweet, utcnow
from weathertweets.ports import ArchivedTweet, Message, Store
from weathertweets.services.consuming import Sink

GROUP = "archiver"


def archive_sink(store: Store) -> Sink:
    async def sink(batch: list[tuple[Message, Tweet]]) -> None:
        if batch:
            archived_at = utcnow()
            await store.archive([ArchivedTweet(tweet, archived_at) for _, tweet in batch])

    return sink
