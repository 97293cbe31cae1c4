"""Realistic offline test data: Spanish weather texts over many countries, skewed like real use.

Each country has a climate; each climate makes some conditions likelier than others. Country
popularity follows a Zipf law, so a few countries post most tweets, as on a real network.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# fmt: off
# (Spanish name, climate), most active first.
COUNTRIES: list[tuple[str, str]] = [
    ("Guatemala", "tropical"), ("México", "arid"), ("España", "temperate"),
    ("Argentina", "temperate"), ("Colombia", "tropical"), ("Estados Unidos", "temperate"),
    ("Perú", "arid"), ("Chile", "temperate"), ("Venezuela", "tropical"),
    ("Ecuador", "tropical"), ("Honduras", "tropical"), ("El Salvador", "tropical"),
    ("Brasil", "tropical"), ("Bolivia", "temperate"), ("Cuba", "tropical"),
    ("República Dominicana", "tropical"), ("Costa Rica", "tropical"), ("Panamá", "tropical"),
    ("Nicaragua", "tropical"), ("Paraguay", "tropical"), ("Uruguay", "temperate"),
    ("Puerto Rico", "tropical"), ("Canadá", "cold"), ("Francia", "temperate"),
    ("Italia", "temperate"), ("Alemania", "temperate"), ("Reino Unido", "temperate"),
    ("Portugal", "temperate"), ("Japón", "temperate"), ("China", "temperate"),
    ("India", "tropical"), ("Turquía", "arid"), ("Rusia", "cold"), ("Australia", "arid"),
    ("Marruecos", "arid"), ("Egipto", "arid"), ("Sudáfrica", "temperate"),
    ("Nigeria", "tropical"), ("Kenia", "tropical"), ("Etiopía", "temperate"),
    ("Arabia Saudita", "arid"), ("Emiratos Árabes Unidos", "arid"), ("Irán", "arid"),
    ("Irak", "arid"), ("Israel", "arid"), ("Jordania", "arid"), ("Líbano", "temperate"),
    ("Grecia", "temperate"), ("Países Bajos", "temperate"), ("Bélgica", "temperate"),
    ("Suiza", "cold"), ("Austria", "cold"), ("Suecia", "cold"), ("Noruega", "cold"),
    ("Finlandia", "cold"), ("Dinamarca", "temperate"), ("Islandia", "cold"),
    ("Irlanda", "temperate"), ("Polonia", "temperate"), ("Ucrania", "cold"),
    ("Rumanía", "temperate"), ("Hungría", "temperate"), ("República Checa", "temperate"),
    ("Croacia", "temperate"), ("Serbia", "temperate"), ("Corea del Sur", "temperate"),
    ("Filipinas", "tropical"), ("Indonesia", "tropical"), ("Tailandia", "tropical"),
    ("Vietnam", "tropical"), ("Malasia", "tropical"), ("Singapur", "tropical"),
    ("Pakistán", "arid"), ("Bangladés", "tropical"), ("Nepal", "cold"),
    ("Nueva Zelanda", "temperate"), ("Argelia", "arid"), ("Túnez", "arid"),
    ("Ghana", "tropical"), ("Senegal", "arid"), ("Angola", "tropical"),
    ("Mozambique", "tropical"), ("Tanzania", "tropical"), ("Madagascar", "tropical"),
    ("Mongolia", "cold"), ("Kazajistán", "cold"), ("Jamaica", "tropical"),
    ("Haití", "tropical"), ("Belice", "tropical"), ("Guinea Ecuatorial", "tropical"),
]

TEXTS: dict[str, list[str]] = {
    "heat": ["Calor sofocante", "Hace mucho calor", "Qué calor hace hoy", "Ola de calor",
             "El sol quema", "Temperaturas altísimas", "Un calor insoportable"],
    "cold": ["Hace mucho frío", "Frío intenso", "Helada esta mañana", "Qué frío hace",
             "Temperaturas bajo cero"],
    "rain": ["Lluvia", "Llueve sin parar", "Lluvias intensas", "Llovizna todo el día",
             "Aguacero en la tarde", "Calles inundadas por la lluvia"],
    "storm": ["Tormenta eléctrica", "Truenos y relámpagos", "Alerta de huracán",
              "Tormenta tropical", "Granizo y tormenta"],
    "snow": ["Está nevando", "Nieve en la ciudad", "Nevada fuerte", "Todo cubierto de nieve"],
    "wind": ["Viento fuerte", "Ráfagas de viento", "Mucho viento hoy", "Vendaval"],
    "fog": ["Niebla densa", "Neblina por la mañana", "No se ve nada por la niebla"],
    "clear": ["Cielo despejado", "Día soleado y agradable", "Un día precioso", "Sol radiante"],
    "other": ["Nublado", "Clima templado", "Humedad alta", "Día gris", "Clima variable"],
}

CLIMATES: dict[str, dict[str, int]] = {
    "tropical": {"heat": 30, "rain": 30, "storm": 15, "clear": 10, "wind": 5, "other": 10},
    "arid": {"heat": 45, "clear": 20, "wind": 15, "cold": 5, "storm": 5, "other": 10},
    "temperate": {"rain": 20, "clear": 20, "cold": 15, "heat": 12, "wind": 10, "fog": 10,
                  "other": 10, "storm": 3},
    "cold": {"cold": 35, "snow": 30, "wind": 10, "fog": 10, "clear": 5, "other": 10},
}

# fmt: on

SUFFIXES = ["", "", "", "", " hoy", " en la capital", " desde anoche", " otra vez", "!"]


def generate(n: int, seed: int | None = None) -> list[dict[str, str]]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** 1.05 for rank in range(len(COUNTRIES))]
    chosen = rng.choices(COUNTRIES, weights=weights, k=n)
    records = []
    for pais, climate in chosen:
        odds = CLIMATES[climate]
        condition = rng.choices(list(odds), weights=list(odds.values()))[0]
        texto = rng.choice(TEXTS[condition]) + rng.choice(SUFFIXES)
        records.append({"texto": texto, "pais": pais})
    return records


def write(records: list[dict[str, str]], path: Path) -> None:
    path.write_text(json.dumps(records, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
