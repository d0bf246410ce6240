"""Is a model's short answer correct? A documented, alias-aware match.

Semantics:
    norm(s)  = NFKD, accents dropped, lower-case, every run of non-alphanumerics -> " ",
               leading articles ("the", "a", "an") dropped
    correct  = some alias a (norm(a) non-empty) occurs in norm(answer[:MATCH_CHARS])
               as a whole-word sequence (a plural "s" allowed: "euros" matches "euro")
Only the first MATCH_CHARS characters count, so an answer that lists many candidates
late ("... or maybe Paris") is not rewarded for the one it buries.
"""

from __future__ import annotations

import re
import unicodedata

MATCH_CHARS = 120
_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_ARTICLE = re.compile(r"^(the|a|an) ")


def norm(text: str) -> str:
    s = unicodedata.normalize("NFKD", text)
    s = "".join(c for c in s if not unicodedata.combining(c)).lower()
    s = _NON_ALNUM.sub(" ", s).strip()
    return _ARTICLE.sub("", s)


def is_correct(answer: str, aliases: list[str]) -> bool:
    hay = f" {norm(answer[:MATCH_CHARS])} "
    return any(f" {a} " in hay or f" {a}s " in hay for a in {norm(x) for x in aliases} if a)
