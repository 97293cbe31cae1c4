"""What a tweet says about the weather: a small, transparent lexicon for Spanish and English.

Each condition has word stems; a text's condition is the first one in PRECEDENCE with a stem that
starts a word of the text (accents and case ignored). Severe weather wins over mild: "granizo y
tormenta" is a storm, "el sol quema" is heat, not clear sky. Negations ("no llueve") are not
understood; texts with no weather word are "other".
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

CONDITIONS = ("heat", "cold", "rain", "storm", "snow", "wind", "fog", "clear", "other")

# Stems match at the start of a word: "lluvi" matches "lluvia", "lluvias", "lluvioso". A stem
# ending in "!" must be the whole word: "sol!" is "sol", not "soldado"; "hot!" is not "hotel".
LEXICON: dict[str, tuple[str, ...]] = {
    "storm": ("torment", "truen", "relampag", "rayos!", "huracan", "ciclon", "tifon", "granizo",
              "granizada", "tornado", "storm", "thunder", "lightning", "hurricane", "hail!",
              "typhoon", "cyclone"),
    "snow": ("niev", "nevad", "nevan", "nevis", "aguanieve", "snow", "blizzard", "sleet"),
    "rain": ("lluvi", "llov", "llueve", "aguacero", "chubasco", "chaparron", "diluvi", "inundad",
             "rain", "drizzl", "shower", "pouring", "downpour", "flood"),
    "fog": ("niebla", "neblina", "bruma", "fog!", "foggy", "mist!", "misty", "haze!"),
    "wind": ("vient", "rafaga", "vendaval", "ventos", "wind", "gust", "gale!", "breez"),
    "heat": ("calor", "caluros", "sofoca", "bochorn", "quema", "altisim", "tórrid", "torrid",
             "canicula", "hot!", "heat", "scorch", "swelter", "boiling"),
    "cold": ("frio", "fria", "helad", "congel", "gelid", "bajo cero", "cold", "freez", "chilly",
             "frost", "icy!"),
    "clear": ("despejad", "soleado", "sol!", "cielo azul", "buen tiempo", "precioso", "radiante",
              "sunny", "sunshine", "clear", "sun!"),
}  # fmt: skip
PRECEDENCE = ("storm", "snow", "rain", "fog", "wind", "heat", "cold", "clear")


def fold(text: str) -> str:
    """Lower case without accents: "Relámpagos" → "relampagos"."""
    decomposed = unicodedata.normalize("NFD", text.casefold())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def _pattern(stems: tuple[str, ...]) -> re.Pattern[str]:
    parts = [
        re.escape(fold(s[:-1])) + r"\b" if s.endswith("!") else re.escape(fold(s)) for s in stems
    ]
    return re.compile(r"\b(?:" + "|".join(parts) + ")")


_PATTERNS = {condition: _pattern(LEXICON[condition]) for condition in PRECEDENCE}


@lru_cache(maxsize=65_536)
def classify(texto: str) -> str:
    """The tweet's weather condition, one of CONDITIONS."""
    folded = fold(texto)
    for condition in PRECEDENCE:
        if _PATTERNS[condition].search(folded):
            return condition
    return "other"


def dominant(counts: dict[str, int]) -> str | None:
    """The most frequent condition other than "other" (ties: precedence), if any."""
    weather = {c: n for c, n in counts.items() if c != "other" and n > 0}
    if not weather:
        return "other" if counts.get("other") else None
    return min(weather, key=lambda c: (-weather[c], PRECEDENCE.index(c)))
