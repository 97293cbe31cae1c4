"""The weather lexicon and the country-name map."""

from __future__ import annotations

import pytest

from weathertweets.countries import SPANISH, iso_code, iso_codes
from weathertweets.gendata import COUNTRIES, TEXTS
from weathertweets.weather import CONDITIONS, classify, dominant


@pytest.mark.parametrize(
    ("texto", "condition"),
    [
        ("Calor sofocante", "heat"),
        ("Qué CALOR hace hoy", "heat"),
        ("It is so hot today", "heat"),
        ("Frío intenso", "cold"),
        ("Freezing morning", "cold"),
        ("Temperaturas bajo cero", "cold"),
        ("Llueve sin parar", "rain"),
        ("Heavy rain in the city", "rain"),
        ("Truenos y relámpagos", "storm"),
        ("Granizo y tormenta", "storm"),  # severe weather wins
        ("Alerta de huracán", "storm"),
        ("Está nevando", "snow"),
        ("Ráfagas de viento", "wind"),
        ("Niebla densa", "fog"),
        ("Foggy and grey", "fog"),
        ("Cielo despejado", "clear"),
        ("Hace sol", "clear"),
        ("El sol quema", "heat"),  # heat before clear sky
        ("Nublado", "other"),
        ("Hotel lleno en la playa", "other"),  # "hot!" is a whole word
        ("El soldado llegó", "other"),  # so is "sol!"
        ("", "other"),
    ],
)
def test_classify(texto: str, condition: str) -> None:
    assert classify(texto) == condition


def test_every_generated_text_gets_the_condition_it_was_made_for() -> None:
    for condition, texts in TEXTS.items():
        for texto in texts:
            assert classify(texto) == condition, texto
    assert set(TEXTS) == set(CONDITIONS)


def test_dominant_prefers_weather_over_other_and_breaks_ties_by_severity() -> None:
    assert dominant({"other": 9, "rain": 2, "heat": 1}) == "rain"
    assert dominant({"heat": 3, "storm": 3}) == "storm"
    assert dominant({"other": 4}) == "other"
    assert dominant({}) is None


def test_country_names_map_to_iso_codes() -> None:
    assert all(iso_code(name) for name, _ in COUNTRIES)
    assert iso_code("Perú") == iso_code("peru") == iso_code("El Perú") == "pe"
    assert iso_code("EE. UU.") == iso_code("Estados Unidos") == "us"
    assert iso_code("Narnia") is None
    assert len(set(SPANISH.values())) >= 195


def test_unknown_names_are_listed_not_dropped() -> None:
    known, unknown = iso_codes({"México": 3, "Mexico": 2, "Narnia": 1})
    assert known == {"mx": 5}
    assert unknown == {"Narnia": 1}
