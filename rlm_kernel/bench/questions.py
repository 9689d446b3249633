"""TREC-coarse-like questions from a grammar, and the bag-of-keywords labeller they are built to defeat.

OOLONG's contexts are TREC questions whose coarse answer type (one of six categories) a reader must
infer. A label read off surface words ("Who" -> human being, "Where" -> location) is right on only
about half of the real questions. This grammar keeps that property: a question is a frame whose
wording fixes what kind of answer it asks for, filled with noun phrases drawn from one pool shared by
every category, and those noun phrases carry the cue words of other categories ("the town where ...",
"the man who ...", the song 'How Many Winters'). Names are built from syllables, so lines rarely repeat.

The category of each generated question is the frame's, so gold labels are exact; `keyword_label`
is the shipped baseline: the cue-word labeller a keyword rule set amounts to.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

LABELS = ("numeric value", "entity", "location", "description and abstract concept", "abbreviation", "human being")
NUM, ENTY, LOC, DESC, ABBR, HUM = LABELS

_ONSETS = "b br c d dr f g gr h k l m n p qu r s st t tr v w z".split()
_VOWELS = "a e i o u ai ea io ou".split()
_CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "rk", "ck", "x"]
FIRST_NAMES = (
    "Ada Alvar Bruna Cato Dagny Elio Farah Gunnar Hedda Ilse Jonah Kasia Leif Mira Nils Odile Pavel Runa Sabin "
    "Tamsin Ugo Vera Wendel Yara Zofia Ansel Brigid Corin Delphine Emrys"
).split()
_ORG_KINDS = (
    "Guild",
    "Rowing Club",
    "Observatory",
    "Press",
    "Museum",
    "Brewery",
    "Choir",
    "Trust",
    "Academy",
    "Orchestra",
    "Shipyard",
    "Library",
    "Society",
)
_ARTIFACTS = "bell clock bridge organ tapestry telescope locomotive lighthouse fountain carillon loom".split()
_WORKS = ("song", "novel", "painting", "opera", "poem", "film")
_PROFESSIONS = ("novelist", "painter", "composer", "engineer", "sculptor", "poet", "architect")
_ROLES = ("founder", "first director", "chief engineer", "head librarian", "longest-serving mayor", "first captain")
_PLURALS = ("bridges", "museums", "islands", "bakeries", "lighthouses", "churches", "tram lines")
_LANGUAGES = ("Basque", "Frisian", "Romansh", "Sorbian", "Ladino", "Manx", "Faroese")
# Title openings that carry other categories' cue words, as real song and book titles do.
_TITLE_HEADS = (
    "How Many",
    "Where the",
    "Who Sang at",
    "Why the",
    "When the",
    "Ten Thousand",
    "The Year of the",
    "What the",
    "The Capital of",
    "The Long",
)
_TITLE_TAILS = ("Winters", "Rivers", "Lanterns", "Summers", "Roads", "Bells", "Orchards", "Herons")


def _word(rng: random.Random, syllables: int = 2) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))


def pseudo_name(rng: random.Random) -> str:
    return _word(rng, rng.choice((2, 2, 3))).capitalize()


def _year(rng: random.Random) -> str:
    return str(rng.randrange(1620, 2020))


def _acronym(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHIJKLMNOPRSTVW") for _ in range(rng.randrange(3, 6)))


def _title(rng: random.Random) -> str:
    return f"'{rng.choice(_TITLE_HEADS)} {rng.choice(_TITLE_TAILS)}'"


# Noun phrases: every category's frames draw on these, and each can carry another category's cue words.


def person(rng: random.Random) -> str:
    return rng.choice(
        (
            lambda: f"{rng.choice(FIRST_NAMES)} {pseudo_name(rng)}",
            lambda: f"{rng.choice(FIRST_NAMES)} {pseudo_name(rng)}",
            lambda: f"the {rng.choice(_ROLES)} of {org(rng, simple=True)}",
            lambda: f"the woman who mapped {pseudo_name(rng)}",
            lambda: f"the {rng.choice(_PROFESSIONS)} born in {pseudo_name(rng)} in {_year(rng)}",
            lambda: (
                f"the {rng.choice(_PROFESSIONS)} who counted how many {rng.choice(_PLURALS)} {pseudo_name(rng)} had"
            ),
        )
    )()


def place(rng: random.Random) -> str:
    return rng.choice(
        (
            lambda: pseudo_name(rng),
            lambda: f"Port {pseudo_name(rng)}",
            lambda: f"the town where {rng.choice(FIRST_NAMES)} {pseudo_name(rng)} was born",
            lambda: f"the city whose population doubled in {_year(rng)}",
            lambda: f"the island of {pseudo_name(rng)}",
            lambda: f"the valley named after {rng.choice(FIRST_NAMES)} {pseudo_name(rng)}",
            lambda: f"the village whose name means '{_word(rng)}'",
        )
    )()


def org(rng: random.Random, simple: bool = False) -> str:
    kind = rng.choice(_ORG_KINDS)
    if simple:
        return f"the {pseudo_name(rng)} {kind}"
    return rng.choice(
        (
            lambda: f"the {pseudo_name(rng)} {kind}",
            lambda: f"the {_acronym(rng)} {kind}",
            lambda: f"the {kind.lower()} that {rng.choice(FIRST_NAMES)} {pseudo_name(rng)} founded in {_year(rng)}",
        )
    )()


def artifact(rng: random.Random) -> str:
    return rng.choice(
        (
            lambda: f"the {pseudo_name(rng)} {rng.choice(_ARTIFACTS)}",
            lambda: f"the {rng.choice(_ARTIFACTS)} in {place(rng)}",
            lambda: f"the painting {_title(rng)}",
        )
    )()


def event(rng: random.Random) -> str:
    return rng.choice(
        (
            lambda: f"the {pseudo_name(rng)} flood of {_year(rng)}",
            lambda: f"the opening of {artifact(rng)}",
            lambda: f"the first {pseudo_name(rng)} festival",
        )
    )()


def work(rng: random.Random) -> str:
    return f"the {rng.choice(_WORKS)} {_title(rng)}"


Frame = Callable[[random.Random], str]
P, L, G, T, E = person, place, org, artifact, event  # G: a group (organisation)

# The frame fixes the kind of answer asked for; its noun phrases are shared by all six categories.
FRAMES: dict[str, tuple[Frame, ...]] = {
    NUM: (
        lambda r: f"How many {r.choice(_PLURALS)} does {L(r)} have ?",
        lambda r: f"How old was {P(r)} at {E(r)} ?",
        lambda r: f"In what year did {G(r)} close ?",
        lambda r: f"What is the population of {L(r)} ?",
        lambda r: f"How far is {L(r)} from {L(r)} ?",
        lambda r: f"What did {T(r)} cost when it was new ?",
        lambda r: f"How much did {P(r)} pay for {T(r)} ?",
        lambda r: f"What share of the people in {L(r)} speak {r.choice(_LANGUAGES)} ?",
        lambda r: f"On what date did {P(r)} reach {L(r)} ?",
        lambda r: f"How tall is {T(r)} ?",
        lambda r: f"Who can tell me the weight of {T(r)} ?",
        lambda r: f"Name the year in which {P(r)} founded {G(r)} .",
        lambda r: f"What is the depth of Lake {pseudo_name(r)} ?",
        lambda r: f"At what temperature does the water of {L(r)} freeze ?",
        lambda r: f"What was the final score when {G(r)} won {E(r)} ?",
        lambda r: f"What is the speed limit on the roads of {L(r)} ?",
        lambda r: f"What was the attendance at {E(r)} ?",
    ),
    LOC: (
        lambda r: f"Where did {P(r)} grow up ?",
        lambda r: f"In which city is {G(r)} based ?",
        lambda r: f"What country does {T(r)} come from ?",
        lambda r: f"Where is {T(r)} kept today ?",
        lambda r: f"Which port did {P(r)} sail from in {_year(r)} ?",
        lambda r: f"Name the island where {P(r)} spent {r.randrange(2, 40)} years .",
        lambda r: f"What city did {P(r)} move to after {E(r)} ?",
        lambda r: f"Who knows in which valley {G(r)} built its first hall ?",
        lambda r: f"At what address did {P(r)} write {work(r)} ?",
        lambda r: f"What is the birthplace of {P(r)} ?",
        lambda r: f"Which mountain range crosses {L(r)} ?",
        lambda r: f"Name a river that flows past {G(r)} .",
        lambda r: f"What is the highest peak near {L(r)} ?",
        lambda r: f"Name the birthplace of the founder of {G(r)} .",
        lambda r: f"What county is {L(r)} in ?",
    ),
    HUM: (
        lambda r: f"Who designed {T(r)} ?",
        lambda r: f"Which {r.choice(_PROFESSIONS)} wrote {work(r)} ?",
        lambda r: f"Name the {r.choice(_ROLES)} of {G(r)} in {_year(r)} .",
        lambda r: f"What is the name of the sculptor who carved {T(r)} ?",
        lambda r: f"Whose portrait hangs in the town hall of {L(r)} ?",
        lambda r: f"What was the name of the first teacher of {P(r)} ?",
        lambda r: f"Which explorer first reached {L(r)} ?",
        lambda r: f"Who was the apprentice of {P(r)} ?",
        lambda r: f"Which {r.choice(_PROFESSIONS)} lived in the town where {P(r)} was born ?",
        lambda r: f"Who owned the land where {T(r)} stands ?",
        lambda r: f"Which goalkeeper saved the final penalty at {E(r)} ?",
        lambda r: f"What is the name of the person who rebuilt {T(r)} after {E(r)} ?",
    ),
    ENTY: (
        lambda r: f"What language is spoken in {L(r)} ?",
        lambda r: f"What instrument did {P(r)} play ?",
        lambda r: f"Which animal appears on the flag of {L(r)} ?",
        lambda r: f"What currency did {L(r)} use before {_year(r)} ?",
        lambda r: f"What sport is {L(r)} best known for ?",
        lambda r: f"What did {P(r)} invent in {_year(r)} ?",
        lambda r: f"Which novel did {P(r)} write after {E(r)} ?",
        lambda r: f"What is the name of the ship that {P(r)} sailed on ?",
        lambda r: f"What was the founder of {G(r)} holding in the portrait ?",
        lambda r: f"What do the people of {L(r)} eat at {E(r)} ?",
        lambda r: f"What is {T(r)} made of ?",
        lambda r: f"What is the national flower of {L(r)} ?",
        lambda r: f"What game do the children of {L(r)} play at {E(r)} ?",
        lambda r: f"Name a bird that nests on {L(r)} .",
    ),
    DESC: (
        lambda r: f"Why did {P(r)} leave {L(r)} ?",
        lambda r: f"How did {P(r)} become famous ?",
        lambda r: f"What does the word '{_word(r)}' mean ?",
        lambda r: f"How does {T(r)} work ?",
        lambda r: f"What was the reason for {E(r)} ?",
        lambda r: f"Where does the word '{_word(r)}' come from ?",
        lambda r: f"How did {L(r)} get its name ?",
        lambda r: f"What is the difference between {T(r)} and {T(r)} ?",
        lambda r: f"Who can explain what happened to {G(r)} in {_year(r)} ?",
        lambda r: f"What made {P(r)} so popular in {L(r)} ?",
        lambda r: f"What is a {_word(r)} ?",
        lambda r: f"Describe the customs of {E(r)} .",
    ),
    ABBR: (
        lambda r: f"What does {_acronym(r)} stand for ?",
        lambda r: f"What is {G(r)} usually abbreviated to ?",
        lambda r: f"What do the letters {_acronym(r)} on {T(r)} mean ?",
        lambda r: f"{_acronym(r)} is short for what ?",
        lambda r: f"How is {G(r)} written in initials ?",
        lambda r: f"Who knows what the {_acronym(r)} in the name of {G(r)} means in full ?",
        lambda r: f"What are the initials of {G(r)} ?",
        lambda r: f"What is the full name behind {_acronym(r)} ?",
        lambda r: f"Spell out {_acronym(r)} in full .",
        lambda r: f"What is {_acronym(r)} , the body that runs {G(r)} , short for ?",
    ),
}


def instance(rng: random.Random, label: str) -> str:
    """One question whose answer is of the category `label`."""
    return rng.choice(FRAMES[label])(rng)


# --------------------------------------------------------------------------------------------
# the baseline: a bag of cue words per category, the most matches wins

CUES: dict[str, tuple[str, ...]] = {
    NUM: (
        "how many",
        "how much",
        "how far",
        "how long",
        "how old",
        "how tall",
        "when",
        "year",
        "date",
        "population",
        "number",
        "cost",
        "price",
        "weight",
        "percentage",
    ),
    LOC: ("where", "country", "city", "continent", "located", "capital", "island", "town", "port", "valley"),
    HUM: ("who", "whom", "whose", "founder", "founded", "inventor", "wrote", "author", "designed", "person", "woman"),
    ABBR: ("stand for", "abbreviation", "abbreviated", "acronym", "full form", "short for", "initials", "letters"),
    DESC: ("why", "how does", "how did", "how do", "mean", "meaning", "definition", "origin", "explain", "reason"),
    ENTY: ("what kind", "what type", "animal", "colour", "breed", "sport", "language", "currency", "instrument"),
}
_CUE_PATTERNS = {label: [re.compile(rf"\b{re.escape(cue)}\b", re.I) for cue in cues] for label, cues in CUES.items()}


def keyword_label(question: str) -> str:
    """The baseline's category: the one with the most cue words; ties go to the earliest cue; none: entity."""
    best: tuple[int, int, str] | None = None
    for label, patterns in _CUE_PATTERNS.items():
        hits = [m.start() for p in patterns for m in p.finditer(question)]
        if hits and (best is None or (len(hits), -min(hits)) > best[:2]):
            best = (len(hits), -min(hits), label)
    return best[2] if best else ENTY
