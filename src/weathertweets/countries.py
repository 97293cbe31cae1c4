"""Country names in Spanish, English and common variants → ISO 3166-1 alpha-2 codes, and one
canonical Spanish name per country (what the counters and the archive use).

Matching ignores case, accents and a leading article, so "Perú", "peru", "El Perú" and "Peru"
agree. Names it does not know are refused at the door (unless configured to accept them) and
reported by `iso_codes` rather than dropped.
"""

from __future__ import annotations

import functools

from weathertweets.weather import fold

# fmt: off
SPANISH: dict[str, str] = {
    "Afganistán": "af", "Albania": "al", "Alemania": "de", "Andorra": "ad", "Angola": "ao",
    "Antigua y Barbuda": "ag", "Arabia Saudita": "sa", "Arabia Saudí": "sa", "Argelia": "dz",
    "Argentina": "ar", "Armenia": "am", "Australia": "au", "Austria": "at", "Azerbaiyán": "az",
    "Bahamas": "bs", "Bangladés": "bd", "Bangladesh": "bd", "Barbados": "bb", "Baréin": "bh",
    "Bélgica": "be", "Belice": "bz", "Benín": "bj", "Bielorrusia": "by", "Birmania": "mm",
    "Myanmar": "mm", "Bolivia": "bo", "Bosnia y Herzegovina": "ba", "Botsuana": "bw",
    "Brasil": "br", "Brunéi": "bn", "Bulgaria": "bg", "Burkina Faso": "bf", "Burundi": "bi",
    "Bután": "bt", "Cabo Verde": "cv", "Camboya": "kh", "Camerún": "cm", "Canadá": "ca",
    "Catar": "qa", "Qatar": "qa", "Chad": "td", "Chile": "cl", "China": "cn", "Chipre": "cy",
    "Colombia": "co", "Comoras": "km", "Congo": "cg", "República del Congo": "cg",
    "República Democrática del Congo": "cd", "Corea del Norte": "kp", "Corea del Sur": "kr",
    "Costa de Marfil": "ci", "Costa Rica": "cr", "Croacia": "hr", "Cuba": "cu",
    "Dinamarca": "dk", "Dominica": "dm", "Ecuador": "ec", "Egipto": "eg", "El Salvador": "sv",
    "Emiratos Árabes Unidos": "ae", "Eritrea": "er", "Eslovaquia": "sk", "Eslovenia": "si",
    "España": "es", "Estados Unidos": "us", "Estados Unidos de América": "us", "EE. UU.": "us",
    "EEUU": "us", "Estonia": "ee", "Esuatini": "sz", "Suazilandia": "sz", "Etiopía": "et",
    "Filipinas": "ph", "Finlandia": "fi", "Fiyi": "fj", "Francia": "fr", "Gabón": "ga",
    "Gambia": "gm", "Georgia": "ge", "Ghana": "gh", "Granada": "gd", "Grecia": "gr",
    "Groenlandia": "gl", "Guatemala": "gt", "Guinea": "gn", "Guinea-Bisáu": "gw",
    "Guinea Ecuatorial": "gq", "Guyana": "gy", "Haití": "ht", "Honduras": "hn", "Hungría": "hu",
    "India": "in", "Indonesia": "id", "Irak": "iq", "Irán": "ir", "Irlanda": "ie",
    "Islandia": "is", "Islas Marshall": "mh", "Islas Salomón": "sb", "Israel": "il",
    "Italia": "it", "Jamaica": "jm", "Japón": "jp", "Jordania": "jo", "Kazajistán": "kz",
    "Kenia": "ke", "Kirguistán": "kg", "Kiribati": "ki", "Kosovo": "xk", "Kuwait": "kw",
    "Laos": "la", "Lesoto": "ls", "Letonia": "lv", "Líbano": "lb", "Liberia": "lr",
    "Libia": "ly", "Liechtenstein": "li", "Lituania": "lt", "Luxemburgo": "lu",
    "Macedonia del Norte": "mk", "Madagascar": "mg", "Malasia": "my", "Malaui": "mw",
    "Maldivas": "mv", "Malí": "ml", "Malta": "mt", "Marruecos": "ma", "Mauricio": "mu",
    "Mauritania": "mr", "México": "mx", "Micronesia": "fm", "Moldavia": "md", "Mónaco": "mc",
    "Mongolia": "mn", "Montenegro": "me", "Mozambique": "mz", "Namibia": "na", "Nauru": "nr",
    "Nepal": "np", "Nicaragua": "ni", "Níger": "ne", "Nigeria": "ng", "Noruega": "no",
    "Nueva Zelanda": "nz", "Omán": "om", "Países Bajos": "nl", "Holanda": "nl",
    "Pakistán": "pk", "Palaos": "pw", "Palestina": "ps", "Panamá": "pa",
    "Papúa Nueva Guinea": "pg", "Paraguay": "py", "Perú": "pe", "Polonia": "pl",
    "Portugal": "pt", "Puerto Rico": "pr", "Reino Unido": "gb", "Inglaterra": "gb",
    "República Centroafricana": "cf", "República Checa": "cz", "Chequia": "cz",
    "República Dominicana": "do", "Ruanda": "rw", "Rumanía": "ro", "Rumania": "ro",
    "Rusia": "ru", "Samoa": "ws", "San Cristóbal y Nieves": "kn", "San Marino": "sm",
    "San Vicente y las Granadinas": "vc", "Santa Lucía": "lc", "Santo Tomé y Príncipe": "st",
    "Senegal": "sn", "Serbia": "rs", "Seychelles": "sc", "Sierra Leona": "sl",
    "Singapur": "sg", "Siria": "sy", "Somalia": "so", "Sri Lanka": "lk", "Sudáfrica": "za",
    "Sudán": "sd", "Sudán del Sur": "ss", "Suecia": "se", "Suiza": "ch", "Surinam": "sr",
    "Tailandia": "th", "Taiwán": "tw", "Tanzania": "tz", "Tayikistán": "tj",
    "Timor Oriental": "tl", "Togo": "tg", "Tonga": "to", "Trinidad y Tobago": "tt",
    "Túnez": "tn", "Turkmenistán": "tm", "Turquía": "tr", "Tuvalu": "tv", "Ucrania": "ua",
    "Uganda": "ug", "Uruguay": "uy", "Uzbekistán": "uz", "Vanuatu": "vu", "Vaticano": "va",
    "Venezuela": "ve", "Vietnam": "vn", "Yemen": "ye", "Yibuti": "dj", "Zambia": "zm",
    "Zimbabue": "zw", "Sahara Occidental": "eh", "Hong Kong": "hk", "Nueva Caledonia": "nc",
    "Macedonia": "mk", "República de Corea": "kr", "Corea": "kr", "Estados Unidos Mexicanos": "mx",
    "Reino de España": "es", "Gran Bretaña": "gb", "Escocia": "gb", "Gales": "gb",
    "Federación Rusa": "ru", "Viet Nam": "vn", "Timor-Leste": "tl", "Burkina": "bf",
}

# English names and common variants (the Spanish ones above are matched too).
ENGLISH: dict[str, str] = {
    "Afghanistan": "af", "Algeria": "dz", "Antigua and Barbuda": "ag", "Azerbaijan": "az",
    "Bahrain": "bh", "Belarus": "by", "Belgium": "be", "Belize": "bz", "Benin": "bj",
    "Bhutan": "bt", "Bosnia and Herzegovina": "ba", "Botswana": "bw", "Brazil": "br",
    "Brunei": "bn", "Burma": "mm", "Cambodia": "kh", "Cameroon": "cm", "Canada": "ca",
    "Cape Verde": "cv", "Central African Republic": "cf", "Comoros": "km",
    "Republic of the Congo": "cg", "Democratic Republic of the Congo": "cd", "DR Congo": "cd",
    "North Korea": "kp", "South Korea": "kr", "Korea": "kr", "Ivory Coast": "ci",
    "Côte d'Ivoire": "ci", "Croatia": "hr", "Cyprus": "cy", "Czech Republic": "cz",
    "Czechia": "cz", "Denmark": "dk", "Djibouti": "dj", "Dominican Republic": "do",
    "East Timor": "tl", "Timor-Leste": "tl", "Egypt": "eg", "Equatorial Guinea": "gq",
    "Eswatini": "sz", "Swaziland": "sz", "Ethiopia": "et", "Fiji": "fj", "Finland": "fi",
    "France": "fr", "Gabon": "ga", "Germany": "de", "Greece": "gr", "Greenland": "gl",
    "Grenada": "gd", "Guinea-Bissau": "gw", "Haiti": "ht", "Hungary": "hu", "Iceland": "is",
    "Iran": "ir", "Iraq": "iq", "Ireland": "ie", "Italy": "it", "Japan": "jp", "Jordan": "jo",
    "Kazakhstan": "kz", "Kenya": "ke", "Kyrgyzstan": "kg", "Latvia": "lv", "Lebanon": "lb",
    "Lesotho": "ls", "Libya": "ly", "Lithuania": "lt", "Luxembourg": "lu",
    "North Macedonia": "mk", "Malawi": "mw", "Malaysia": "my", "Maldives": "mv", "Mali": "ml",
    "Marshall Islands": "mh", "Mauritius": "mu", "Mexico": "mx", "Moldova": "md",
    "Monaco": "mc", "Morocco": "ma", "Netherlands": "nl", "Holland": "nl", "New Zealand": "nz",
    "Niger": "ne", "Norway": "no", "Oman": "om", "Pakistan": "pk", "Palau": "pw",
    "Panama": "pa", "Papua New Guinea": "pg", "Peru": "pe", "Philippines": "ph",
    "Poland": "pl", "Romania": "ro", "Russia": "ru", "Russian Federation": "ru",
    "Rwanda": "rw", "Saint Kitts and Nevis": "kn", "Saint Lucia": "lc",
    "Saint Vincent and the Grenadines": "vc", "Sao Tome and Principe": "st",
    "Saudi Arabia": "sa", "Sierra Leone": "sl", "Singapore": "sg", "Slovakia": "sk",
    "Slovenia": "si", "Solomon Islands": "sb", "South Africa": "za", "South Sudan": "ss",
    "Spain": "es", "Sudan": "sd", "Suriname": "sr", "Sweden": "se", "Switzerland": "ch",
    "Syria": "sy", "Taiwan": "tw", "Tajikistan": "tj", "Thailand": "th",
    "Trinidad and Tobago": "tt", "Tunisia": "tn", "Turkey": "tr", "Türkiye": "tr",
    "Turkmenistan": "tm", "Ukraine": "ua", "United Arab Emirates": "ae", "UAE": "ae",
    "United Kingdom": "gb", "UK": "gb", "Great Britain": "gb", "Britain": "gb",
    "England": "gb", "Scotland": "gb", "Wales": "gb", "United States": "us",
    "United States of America": "us", "USA": "us", "US": "us", "America": "us",
    "Uzbekistan": "uz", "Vatican City": "va", "Holy See": "va", "Viet Nam": "vn",
    "Yemen": "ye", "Zambia": "zm", "Zimbabwe": "zw", "Western Sahara": "eh",
    "New Caledonia": "nc", "Bangladesh": "bd", "Chad": "td", "Lao": "la", "Micronesia": "fm",
    "Sri Lanka": "lk", "Somalia": "so", "Nepal": "np", "Qatar": "qa", "Estonia": "ee",
    "Mauritania": "mr", "Mongolia": "mn", "Montenegro": "me", "Mozambique": "mz",
    "Namibia": "na", "Nauru": "nr", "Nigeria": "ng", "Nicaragua": "ni", "Samoa": "ws",
    "San Marino": "sm", "Senegal": "sn", "Serbia": "rs", "Seychelles": "sc", "Togo": "tg",
    "Tonga": "to", "Tuvalu": "tv", "Uganda": "ug", "Uruguay": "uy", "Vanuatu": "vu",
    "Venezuela": "ve", "Vietnam": "vn", "Tanzania": "tz", "Palestine": "ps",
}
# fmt: on

_ARTICLES = ("el ", "la ", "los ", "las ", "the ")


def _key(name: str) -> str:
    folded = fold(name).strip().replace(".", "").replace("  ", " ")
    for article in _ARTICLES:
        if folded.startswith(article):
            folded = folded[len(article) :]
    return folded


_BY_KEY = {_key(name): code for name, code in {**ENGLISH, **SPANISH}.items()}
# One Spanish name per country: the first listed for its code.
CANONICAL: dict[str, str] = {}
for _name, _code in SPANISH.items():
    CANONICAL.setdefault(_code, _name)


def iso_code(pais: str) -> str | None:
    """ISO alpha-2 (lower case) of a country's name (Spanish, English, variants), or None."""
    return _BY_KEY.get(_key(pais))


@functools.lru_cache(maxsize=4096)  # bounded: names are client input
def canonical(pais: str) -> str | None:
    """The one Spanish name we count a country under ("mexico", "Mexico" → "México")."""
    code = iso_code(pais)
    return None if code is None else CANONICAL[code]


def iso_codes(counts: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """Split {pais: n} into ({iso: n} summed over spellings, {unknown pais: n})."""
    known: dict[str, int] = {}
    unknown: dict[str, int] = {}
    for pais, n in counts.items():
        code = iso_code(pais)
        if code is None:
            unknown[pais] = n
        else:
            known[code] = known.get(code, 0) + n
    return known, unknown
