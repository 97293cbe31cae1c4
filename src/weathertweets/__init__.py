"""Weather Tweets: a scalable pipeline for short messages about the weather in each country."""

__version__ = "0.1.0"
