"""BrowseComp-Plus-like tasks: multi-hop questions over many generated documents with distractors.

A generated world of people, towns and buildings is written out as documents (about 1,000 at 110K
tokens), one per entity, plus travel notes that name entities without saying anything that answers
a question. Every question needs facts from three documents found by search, and each hop's clue
matches other documents on all but one of its parts (a bridge of the same year on another river, a
designer with the same surname), so one keyword lookup does not answer it. The gold answer is read
off the world; `solve_from_text` answers from the context text alone, which shows it can be done.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from rlm_kernel.bench.questions import FIRST_NAMES, pseudo_name
from rlm_kernel.bench.tasks import Task, rng_for, size_label

KINDS = ("bridge", "library", "tower", "theatre", "market hall", "observatory")
PROFESSIONS = ("architect", "engineer", "surveyor", "stonemason", "painter", "botanist", "cartographer", "glassblower")
DESIGNERS = ("architect", "engineer")
QUESTION_KINDS = ("designer_birthplace", "mentor_profession", "mayor_birth_year")
DOC_CHARS = 440  # about the mean rendered document, for sizing the world
_FILLER = (
    "Local guides recommend visiting in the early morning, before the tour groups arrive.",
    "The archive holds letters, account books and a few photographs from that period.",
    "Several accounts of those years disagree on small details, but not on the main events.",
    "A small museum nearby keeps drawings and models connected with the place.",
    "Visitors often remark on the view from the hill above the old quarter.",
    "The regional newspaper ran a long series of articles about it in the following decade.",
    "Restoration work in recent years has kept most of the original features.",
    "Records from the period are incomplete, and some were lost in a fire.",
)


@dataclass
class Person:
    name: str
    profession: str
    born_in: str
    birth_year: int
    mentor: str | None = None


@dataclass
class Town:
    name: str
    river: str
    founded: int
    mayor: str


@dataclass
class Building:
    name: str
    kind: str
    town: str
    year: int
    designer: str


@dataclass
class World:
    people: dict[str, Person]
    towns: dict[str, Town]
    buildings: dict[str, Building]


def _unique(rng: random.Random, make: Any, taken: set[str]) -> str:
    while True:
        value = make()
        if value not in taken:
            taken.add(value)
            return value


def make_world(rng: random.Random, n_docs: int) -> World:
    """About `n_docs` entities: 50% people, 20% towns, 30% buildings; few surnames and rivers, many near-misses."""
    n_people, n_towns = max(8, n_docs // 2), max(4, n_docs // 5)
    n_buildings = max(4, n_docs - n_people - n_towns)
    taken: set[str] = set()
    surnames = [_unique(rng, lambda: pseudo_name(rng), taken) for _ in range(max(4, n_people // 4))]
    rivers = [_unique(rng, lambda: pseudo_name(rng), taken) for _ in range(max(2, n_towns // 4))]
    town_names = [_unique(rng, lambda: pseudo_name(rng), taken) for _ in range(n_towns)]
    people: dict[str, Person] = {}
    for number in range(n_people):
        name = _unique(rng, lambda: f"{rng.choice(FIRST_NAMES)} {rng.choice(surnames)}", taken)
        # The first quarter designs buildings, so designers are plentiful and share surnames with others.
        profession = rng.choice(DESIGNERS) if number < n_people // 4 else rng.choice(PROFESSIONS)
        people[name] = Person(name, profession, rng.choice(town_names), rng.randrange(1800, 1990))
    names = list(people)
    for person in people.values():
        if rng.random() < 0.7:
            person.mentor = rng.choice([n for n in names if n != person.name])
    towns = {t: Town(t, rng.choice(rivers), rng.randrange(900, 1900), rng.choice(names)) for t in town_names}
    designers = [p.name for p in people.values() if p.profession in DESIGNERS]
    buildings: dict[str, Building] = {}
    for _ in range(n_buildings):
        kind = rng.choice(KINDS)
        name = _unique(rng, lambda kind=kind: f"the {pseudo_name(rng)} {kind.title()}", taken)
        buildings[name] = Building(name, kind, rng.choice(town_names), rng.randrange(1850, 2015), rng.choice(designers))
    return World(people, towns, buildings)


def _filler(rng: random.Random, k: int) -> str:
    return " ".join(rng.sample(_FILLER, k))


def documents(rng: random.Random, world: World) -> list[tuple[str, str]]:
    """(title, body) for every entity; the sentences `solve_from_text` reads are the first of each body."""
    docs = []
    for p in world.people.values():
        first = p.name.split()[0]
        article = "an" if p.profession[0] in "aeiou" else "a"
        body = f"{p.name} was {article} {p.profession} born in {p.born_in} in {p.birth_year}."
        if p.mentor:
            body += f" As a young {p.profession}, {first} studied under {p.mentor}."
        docs.append((p.name, f"{body} {_filler(rng, 4)}"))
    for t in world.towns.values():
        body = f"{t.name} is a town on the river {t.river}, founded in {t.founded}. Its mayor is {t.mayor}."
        docs.append((t.name, f"{body} {_filler(rng, 4)}"))
    for b in world.buildings.values():
        body = f"{b.name[4:]} is a {b.kind} in {b.town}. It was finished in {b.year} to a design by {b.designer}."
        docs.append((b.name[4:], f"{body} {_filler(rng, 4)}"))
    return docs


def travel_note(rng: random.Random, world: World) -> tuple[str, str]:
    """A distractor: names a person, a building and a town, and states no fact a question asks for."""
    person = rng.choice(list(world.people))
    building = rng.choice(list(world.buildings))
    town = rng.choice(list(world.towns))
    body = (
        f"On a walk through {town}, the writer of these notes met an admirer of {person}, who talked at length "
        f"about {building} and about the river. {_filler(rng, 2)}"
    )
    return "Travel notes", body


def _question(kind: str, rng: random.Random, world: World) -> tuple[str, str] | None:
    """(question, gold) for one kind, or None when this draw's clue would not pick out one answer."""
    if kind == "designer_birthplace":
        b = rng.choice(list(world.buildings.values()))
        river = world.towns[b.town].river
        matches = [
            x
            for x in world.buildings.values()
            if x.kind == b.kind and x.year == b.year and world.towns[x.town].river == river
        ]
        question = (
            f"A {b.kind} was finished in {b.year} in a town on the river {river}. "
            "In which town was the person who designed it born?"
        )
        return (question, world.people[b.designer].born_in) if len(matches) == 1 else None
    if kind == "mentor_profession":
        b = rng.choice(list(world.buildings.values()))
        mentor = world.people[b.designer].mentor
        question = f"What was the profession of the mentor of the person who designed {b.name[4:]}?"
        return (question, world.people[mentor].profession) if mentor else None
    if kind == "mayor_birth_year":
        p = rng.choice(list(world.people.values()))
        question = f"{p.name} was born in a town. In what year was the mayor of that town born?"
        return question, str(world.people[world.towns[p.born_in].mayor].birth_year)
    raise ValueError(f"unknown browsecomp-like question kind {kind!r}")


ANSWER_FORMAT = " Answer with the exact name or number only, in the form 'Exact Answer: ...'."


def browsecomp_like(size_tokens: int, seed: int = 0, index: int = 0) -> Task:
    """About size_tokens * 4 / DOC_CHARS documents (1,000 at 110K tokens) and one three-hop question."""
    rng = rng_for("browsecomp-like", size_tokens, seed, index)
    budget = size_tokens * 4
    n_docs = max(12, budget // DOC_CHARS)
    while True:
        world = make_world(rng, round(n_docs * 0.8))
        docs = documents(rng, world)
        if sum(len(t) + len(b) + 24 for t, b in docs) <= budget or n_docs <= 12:
            break
        n_docs = round(n_docs * 0.9)
    used = sum(len(t) + len(b) + 24 for t, b in docs)
    while True:  # travel notes fill what the entities leave of the budget
        note = travel_note(rng, world)
        used += len(note[0]) + len(note[1]) + 24
        if used > budget:
            break
        docs.append(note)
    rng.shuffle(docs)
    context = "".join(f"[Document {i}] {title}\n{body}\n\n" for i, (title, body) in enumerate(docs, 1))
    kind = QUESTION_KINDS[index % len(QUESTION_KINDS)]
    for _ in range(200):
        made = _question(kind, rng, world)
        if made:
            break
    else:
        raise AssertionError(f"no unique {kind} question in this world")
    question, gold = made
    return Task(
        id=f"browsecomp-like-{size_label(size_tokens)}-s{seed}-{index}",
        family="browsecomp-like",
        kind=kind,
        size_tokens=size_tokens,
        context=context,
        question=question + ANSWER_FORMAT,
        gold=gold,
        meta={"documents": len(docs), "hops": 3},
    )


# --------------------------------------------------------------------------------------------
# the reference solver: the answer from the text alone

_PERSON = re.compile(
    r"\] (.+)\n\1 was an? (\w+) born in (\w+) in (\d+)\.(?: As a young \w+, \w+ studied under (.+?)\.)?"
)
_TOWN = re.compile(r"\] (\w+)\n\1 is a town on the river (\w+), founded in \d+\. Its mayor is (.+?)\.")
_BUILDING = re.compile(r"\] (.+)\n\1 is an? ([a-z ]+) in (\w+)\. It was finished in (\d+) to a design by (.+?)\.")


def solve_from_text(context: str, question: str) -> str | None:
    """Answer a browsecomp-like question by reading the documents' text, hop by hop (None: no answer found)."""
    people = {m[0]: m for m in _PERSON.findall(context)}
    towns = {m[0]: m for m in _TOWN.findall(context)}
    buildings = _BUILDING.findall(context)
    if clue := re.match(r"A (.+?) was finished in (\d+) in a town on the river (\w+)\.", question):
        kind, year, river = clue.groups()
        found = [b for b in buildings if b[1] == kind and b[3] == year and b[2] in towns and towns[b[2]][1] == river]
        designer = people.get(found[0][4]) if len(found) == 1 else None
        return designer[2] if designer else None
    if clue := re.match(r"What was the profession of the mentor of the person who designed (.+?)\?", question):
        found = [b for b in buildings if b[0] == clue.group(1)]
        designer = people.get(found[0][4]) if found else None
        mentor = people.get(designer[4]) if designer and designer[4] else None
        return mentor[1] if mentor else None
    if clue := re.match(r"(.+?) was born in a town\. In what year was the mayor of that town born\?", question):
        person = people.get(clue.group(1))
        town = towns.get(person[2]) if person else None
        mayor = people.get(town[2]) if town else None
        return mayor[3] if mayor else None
    return None
