"""Rebuild vsteer/data/qa/<family>.jsonl (run by hand; the files are committed).

Closed-book QA families from offline sources, one JSONL file each; a line is
{"question", "answers", "family", "entity", "split"}, where split comes from
vsteer.probe.questions.split_of(entity), so all questions about one entity share a split.
See vsteer/data/qa/README.md for sources, licences, templates and known ambiguities.

    pip download --no-deps -d /tmp/qa/wheels mendeleev==1.3.0 us==4.0.0 jellyfish==1.3.0 \
        holidays==0.108 ephem==4.2.1 pint==0.25.3 flexcache==0.3 flexparser==0.4 \
        platformdirs==4.14.9
    /work/main/.venv/bin/python -m pip install --no-deps --target /tmp/qa/site /tmp/qa/wheels/*.whl
    PYTHONPATH=/tmp/qa/site /work/main/.venv/bin/python scripts/build_qa_families.py
(python-dateutil, typing_extensions and pycountry come from the project's venv.)
"""

from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qa_tables import AUTHORS, UNITS  # scripts/ sibling (run as a script)

from vsteer.probe.match import norm
from vsteer.probe.questions import split_of

OUT = Path(__file__).resolve().parent.parent / "vsteer" / "data" / "qa"
Row = dict[str, Any]

SPELLINGS = {"Aluminum": ["Aluminium"], "Cesium": ["Caesium"], "Sulfur": ["Sulphur"]}
WORD_SYMBOLS = {"I", "S", "He", "In", "As", "At", "Be", "No", "Am", "Re"}  # match stray words
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 6: "six", 7: "seven", 8: "eight", 9: "nine",
                10: "ten", 12: "twelve", 14: "fourteen", 16: "sixteen", 20: "twenty",
                22: "twenty-two", 24: "twenty-four", 36: "thirty-six", 60: "sixty",
                100: "one hundred", 1000: "one thousand", 10000: "ten thousand"}
CONSTELLATION_ALIASES = {"Scorpius": ["Scorpio"], "Serpens Caput": ["Serpens"],
                         "Piscis Austrinus": ["Piscis Australis"]}
PREFERRED_STARS = {"Adhara", "Hadar", "Albireo", "Alkaid", "Alpheratz", "Eltanin", "Fomalhaut",
                   "Gienah Corvi"}
INDEPENDENCE_SKIP = re.compile(r"observed|holiday|following|juneteenth|estimated|movement", re.I)
COUNTRY_NAMES = {"BN": "Brunei", "BS": "the Bahamas", "CD": "the Democratic Republic of the Congo",
                 "CF": "the Central African Republic", "CG": "the Republic of the Congo",
                 "DO": "the Dominican Republic", "FM": "Micronesia", "GM": "the Gambia",
                 "PH": "the Philippines", "PS": "Palestine", "SB": "the Solomon Islands",
                 "US": "the United States", "XK": "Kosovo"}

# "<to (plural)>=<pint unit>/<from (with article)>=<pint unit>", ";"-separated.

def _add(rows: list[Row], family: str, entity: str, question: str, answers: list[str]) -> None:
    """One question; aliases found in the question itself (echoes) are dropped."""
    q = f" {norm(question)} "
    kept = [a for a in dict.fromkeys(answers) if norm(a) and f" {norm(a)} " not in q]
    if kept:
        rows.append({"question": question, "answers": kept, "family": family,
                     "entity": entity, "split": split_of(entity)})


def elements() -> list[Row]:
    spec = importlib.util.find_spec("mendeleev")  # locate only; importing needs heavy deps
    assert spec and spec.submodule_search_locations
    db = Path(next(iter(spec.submodule_search_locations))) / "elements.db"
    with sqlite3.connect(db) as con:
        table = con.execute("SELECT atomic_number, symbol, name FROM elements").fetchall()
    rows: list[Row] = []
    for z, sym, name in table:
        names = [name, *SPELLINGS.get(name, [])]
        _add(rows, "elements", sym, f"Which chemical element has the symbol {sym}?", names)
        _add(rows, "elements", sym, f"Which chemical element has atomic number {z}?", names)
        if sym not in WORD_SYMBOLS:
            _add(rows, "elements", sym, f"What is the chemical symbol for {name}?", [sym])
    return rows


def us_states() -> list[Row]:
    import us

    rows: list[Row] = []
    for s in us.STATES:
        caps = [s.capital, s.capital.replace("Saint ", "St. ")]
        _add(rows, "us_states", s.abbr, f"What is the capital of the US state of {s.name}?", caps)
        if not any(f" {s.name} " in f" {t.name} " for t in us.STATES if t is not s):
            _add(rows, "us_states", s.abbr, f"Which US state has {s.capital} as its capital?",
                 [s.name])  # not Virginia: "West Virginia" would match it
        if s.statehood_year:
            _add(rows, "us_states", s.abbr, f"In what year did {s.name} become a US state?",
                 [str(s.statehood_year)])
    return rows


def date_aliases(month: int, day: int) -> list[str]:
    m = ["January", "February", "March", "April", "May", "June", "July", "August",
         "September", "October", "November", "December"][month - 1]
    suffix = "th" if day in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return [f"{m} {day}", f"{day} {m}", f"{m} {day}{suffix}", f"{day}{suffix} of {m}",
            f"{day}{suffix} {m}"]


def national_days() -> list[Row]:
    import holidays
    import pycountry

    def fixed_dates(cc: str, lang: str | None, keep: Callable[[str], bool]) -> set[tuple[int, int]]:
        per_year = []
        for year in (2023, 2024, 2025):  # a date that moves between years is not asked
            cal = holidays.country_holidays(cc, years=year, language=lang)
            per_year.append({(d.month, d.day) for d, names in cal.items()
                             for n in names.split("; ") if keep(n)})
        return per_year[0] if all(len(p) == 1 and p == per_year[0] for p in per_year) else set()

    # Each code has its own alias class (US) whose base is the country class (UnitedStates).
    classes = {cc: type(holidays.country_holidays(cc))
               for cc in holidays.list_supported_countries() if len(cc) == 2}
    bases = {cls.__mro__[1] for cls in classes.values()}
    rows: list[Row] = []
    seen: set[type] = set()
    for cc, cls in sorted(classes.items()):
        country = pycountry.countries.get(alpha_2=cc)
        if set(cls.__mro__[2:]) & bases or cls.__mro__[1] in seen or not (country or cc == "XK"):
            continue  # territories inheriting another country's calendar (PR, GU...); UK == GB
        seen.add(cls.__mro__[1])
        name = COUNTRY_NAMES.get(cc) or getattr(country, "common_name", None) or str(country.name)
        langs = getattr(cls, "supported_languages", ()) or ()
        lang = "en_US" if "en_US" in langs else next((x for x in langs if x[:2] == "en"), None)
        if lang is None and cls.default_language not in (None, "en"):
            continue
        def independence(n: str) -> bool:
            return "Independence" in n and not INDEPENDENCE_SKIP.search(n)

        names = [n for ns in holidays.country_holidays(cc, years=2024, language=lang).values()
                 for n in ns.split("; ") if independence(n)]
        if names:  # a "Restoration of Independence" day leaves the proper one unclear
            dates = fixed_dates(cc, lang, independence)
            if len(dates) == 1 and not any("Restoration" in n for n in names):
                _add(rows, "holidays", cc,
                     f"On what date does {name} celebrate its Independence Day?",
                     date_aliases(*next(iter(dates))))
            continue
        dates = fixed_dates(cc, lang, lambda n: n == "National Day")
        if len(dates) == 1:
            _add(rows, "holidays", cc, f"On what date is the National Day of {name}?",
                 date_aliases(*next(iter(dates))))
    return rows


def number_aliases(value: float) -> list[str]:
    """Exact (if short), 4-, 3- and 5-significant-digit forms; 3/5 only when 4 is inexact."""
    exact = f"{value:.12g}"
    short = "e" not in exact and len(re.sub(r"\D", "", exact).strip("0")) <= 7
    forms = [f"{value:.4g}"]  # within 1e-5 of the 4-digit form: that form is the convention
    if abs(float(forms[0]) - value) > 1e-5 * abs(value):
        forms += [exact] if short else [f"{value:.5g}"]
        forms.append(f"{value:.3g}")
    out: list[str] = []
    for form in forms:
        r = float(form)
        if r == int(r):
            n = int(r)
            out += [str(n), f"{n:,}"]
            if n in NUMBER_WORDS:
                out.append(NUMBER_WORDS[n])
            for big, word in ((10**12, "trillion"), (10**9, "billion"), (10**6, "million")):
                if n >= big:
                    out.append(f"{'one' if n == big else f'{n / big:g}'} {word}")
                    break
        else:
            out.append(f"{r:.10f}".rstrip("0"))
    return list(dict.fromkeys(out))


def units() -> list[Row]:
    import pint

    ureg = pint.UnitRegistry()
    rows: list[Row] = []
    for item in re.split(r";|\n", UNITS):
        if not item.strip():
            continue
        m = re.fullmatch(r"(.+?)=(.+?)/(an? .+?)=(.+)", item.strip())
        assert m, item
        to_text, to_unit, from_text, from_unit = m.groups()
        value = float(ureg.Quantity(1, from_unit).to(to_unit).magnitude)
        _add(rows, "units", f"{to_unit} per {from_unit}",
             f"How many {to_text} are in {from_text}?", number_aliases(value))
    return rows


def stars() -> list[Row]:
    import ephem
    import ephem.stars

    by_place: dict[tuple[float, float], list[str]] = {}
    for name in sorted(ephem.stars.stars):
        star = ephem.star(name)
        star.compute("2000/1/1")
        by_place.setdefault((round(star.a_ra, 6), round(star.a_dec, 6)), []).append(name)
    rows: list[Row] = []
    for names in by_place.values():  # one name per star: drop variant spellings
        name = next((n for n in names if n in PREFERRED_STARS), names[0])
        star = ephem.star(name)
        star.compute("2000/1/1")
        full = ephem.constellation(star)[1]
        _add(rows, "stars", name, f"In which constellation is the star {name}?",
             [full, *CONSTELLATION_ALIASES.get(full, [])])
    return rows


def authors() -> list[Row]:
    rows: list[Row] = []
    for item in re.split(r";|\n", AUTHORS):
        if not item.strip():
            continue
        title, author, aliases, kind = (item.strip().split("|") + ["", ""])[:4]
        extra = [] if aliases == "-" else aliases.split(",") if aliases else [author.split()[-1]]
        _add(rows, "authors", title, f"Who wrote the {kind or 'novel'} {title}?",
             [author, *extra])
    return rows


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    builders = {"elements": elements, "us_states": us_states, "holidays": national_days,
                "units": units, "stars": stars, "authors": authors}
    for family, build in builders.items():
        merged: dict[str, Row] = {}
        for row in build():  # deduplicate questions, merging their aliases
            old = merged.setdefault(row["question"], row)
            if old is not row:
                old["answers"] = list(dict.fromkeys(old["answers"] + row["answers"]))
        rows = sorted(merged.values(), key=lambda r: (r["entity"], r["question"]))
        with open(OUT / f"{family}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        test = sum(r["split"] == "test" for r in rows)
        print(f"{family:10s} {len(rows):4d} questions  train {len(rows) - test:4d}  test {test:4d}")


if __name__ == "__main__":
    main()
