"""The language of a text, for a default prompt in it: Russian when most of its letters are
Cyrillic, else English. Importers count the letters of what the persona (or the corpus)
wrote with `letters`, add the counters up, and ask `language` once.

Example: `language(letters("Колобок повесился.")) == "ru"`
"""

from __future__ import annotations

import re
from collections import Counter

NAMES = {"ru": "Russian", "en": "English"}
_CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)
_LATIN = re.compile(r"[a-z]", re.IGNORECASE)


def letters(text: str) -> Counter:
    """The text's Cyrillic ("ru") and Latin ("en") letters."""
    return Counter(ru=len(_CYRILLIC.findall(text)), en=len(_LATIN.findall(text)))


def language(counted: Counter) -> str:
    """'ru' when most of the counted letters are Cyrillic, else 'en'."""
    return "ru" if counted["ru"] > counted["en"] else "en"
