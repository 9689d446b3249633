"""LongBench-v2-CodeQA-like tasks: four-way multiple-choice questions about a generated Python repository.

The repository is a package of modules whose functions call each other across files. Function
names repeat between modules (two `load_order`s), callers reach them by `from ... import` or through
a module alias, and comments and log strings mention names they do not call, so a text search
for a name finds more than its callers. The questions: where is X defined, which functions call Y,
which files would a change to Z's parameters touch. The gold answer comes from the generated call
graph; `solve_from_text` answers from the source text alone (it parses it), which shows it can be done.
"""

from __future__ import annotations

import ast
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field

from rlm_kernel.bench.tasks import Task, rng_for, size_label

AREAS = ("billing", "shipping", "accounts", "reports", "storage", "auth", "search", "alerts", "catalog", "payroll")
NOUNS = ("order", "invoice", "user", "batch", "ledger", "route", "report", "token", "cache", "shipment", "refund")
VERBS = ("load", "parse", "save", "check", "build", "merge", "send", "render", "score", "sort", "fetch", "apply")
QUALIFIERS = (
    "open closed pending daily monthly draft local remote cached stale signed partial overdue archived weekly "
    "primary nightly queued failed manual"
).split()
QUESTION_KINDS = ("where_defined", "callers", "impact")
LETTERS = "ABCD"
FILE_HEADER = "# ===== file: {path} =====\n"
MODULE_CHARS = 2_600  # about the mean rendered module, for sizing the repository
_CHOICE_FORMAT = "Answer with the letter of the correct option, in the form 'Answer: (X)'."

Ref = tuple[str, str]  # (file path, function name)


@dataclass
class Function:
    name: str
    calls: list[Ref] = field(default_factory=list)
    mentions: list[str] = field(default_factory=list)  # names in comments and strings, never called


@dataclass
class Repo:
    modules: dict[str, list[Function]]

    def callers(self, target: Ref) -> set[Ref]:
        return {(path, f.name) for path, fs in self.modules.items() for f in fs if target in f.calls}

    def definitions(self, name: str) -> list[str]:
        return [path for path, fs in self.modules.items() if any(f.name == name for f in fs)]


def _dotted(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _function_name(rng: random.Random) -> str:
    qualifier = f"{rng.choice(QUALIFIERS)}_" if rng.random() < 0.7 else ""
    return f"{rng.choice(VERBS)}_{qualifier}{rng.choice(NOUNS)}"


def make_repo(rng: random.Random, n_modules: int) -> Repo:
    paths: list[str] = []
    while len(paths) < n_modules:
        path = f"pkg/{rng.choice(AREAS)}/{rng.choice(NOUNS)}s{'' if rng.random() < 0.6 else '_' + rng.choice(VERBS)}.py"
        if path not in paths:
            paths.append(path)
    modules: dict[str, list[Function]] = {}
    every: list[Ref] = []
    for path in paths:
        names: list[str] = []
        for _ in range(rng.randrange(5, 9)):
            # A third of the names repeat one defined in another module: callers must resolve imports.
            name = rng.choice(every)[1] if every and rng.random() < 0.3 else _function_name(rng)
            if name not in names:
                names.append(name)
        functions = [Function(name) for name in names]
        for number, function in enumerate(functions):
            local = [(path, f.name) for f in functions[:number]]
            size = len(local) + len(every)
            if not size:
                continue
            picks = rng.sample(range(size), min(size, rng.randrange(0, 4)))
            function.calls = [local[i] if i < len(local) else every[i - len(local)] for i in picks]
            if rng.random() < 0.5:
                pick = rng.randrange(size)
                function.mentions = [(local[pick] if pick < len(local) else every[pick - len(local)])[1]]
        modules[path] = functions
        every.extend((path, f.name) for f in functions)
    return Repo(modules)


def render_module(path: str, functions: list[Function], rng: random.Random) -> str:
    """The module's source: imports (from-import, or a module alias where names would clash), then its functions."""
    local = {f.name for f in functions}
    targets = sorted({ref for f in functions for ref in f.calls if ref[0] != path})
    plain: dict[str, list[str]] = defaultdict(list)
    aliased: dict[str, str] = {}
    imported: set[str] = set()
    for module, name in targets:
        if module in aliased:
            continue
        if name in local or name in imported or rng.random() < 0.3:
            aliased[module] = f"{module.rsplit('/', 1)[1].removesuffix('.py')}_mod{len(aliased)}"
        else:
            plain[module].append(name)
            imported.add(name)
    lines = [f'"""{path.split("/")[1].title()} helpers for {path.rsplit("/", 1)[1].removesuffix(".py")}."""', ""]
    lines += [f"from {_dotted(m)} import {', '.join(sorted(set(ns)))}" for m, ns in sorted(plain.items())]
    lines += [f"import {_dotted(m)} as {alias}" for m, alias in sorted(aliased.items())]
    lines.append("")
    for f in functions:
        verb, _, what = f.name.partition("_")
        lines += [
            "",
            f"def {f.name}(items, options=None):",
            f'    """{verb.title()} {what.replace("_", " ")} records."""',
        ]
        lines.append("    total = 0")
        for mention in f.mentions:
            lines.append(f"    # unlike {mention}, this keeps the original order")
        for module, name in f.calls:
            if module == path or name not in plain.get(module, []):
                call = name if module == path else f"{aliased[module]}.{name}"
            else:
                call = name
            lines.append(f"    total += len({call}(items, options) or ())")
        if f.mentions:
            lines.append(f'    log = ["{f.mentions[0]} skipped"] if options else []')
        lines += ["    for item in items:", "        total += len(str(item))", "    return total"]
    return "\n".join(lines) + "\n"


def _options(
    rng: random.Random, gold: str, candidates: list[str]
) -> tuple[list[str], str] | None:  # (four options, gold letter)
    others = [c for c in dict.fromkeys(candidates) if c != gold]
    if len(others) < 3:
        return None
    options = [gold, *rng.sample(others, 3)]
    rng.shuffle(options)
    return options, LETTERS[options.index(gold)]


def _refs_text(refs: set[Ref]) -> str:
    return ", ".join(f"{p}:{n}" for p, n in sorted(refs))


def _question(kind: str, rng: random.Random, repo: Repo) -> tuple[str, list[str], str] | None:
    """(question, options, gold letter), or None when this draw would not make four distinct options."""
    paths = list(repo.modules)
    defined = [(p, f.name) for p, fs in repo.modules.items() for f in fs]
    target = rng.choice(defined)
    path, name = target
    callers = repo.callers(target)
    if kind == "where_defined":
        if len(repo.definitions(name)) != 1 or not callers:
            return None
        noun = name.rsplit("_", 1)[1]
        near = [p for p in paths if any(f.name.endswith(noun) for f in repo.modules[p])] + [p for p, _ in callers]
        made = _options(rng, path, near + rng.sample(paths, min(6, len(paths))))
        question = f"In which file is the function `{name}` defined?"
    elif kind == "callers":
        if not callers:
            return None
        namesakes = {c for p in repo.definitions(name) if p != path for c in repo.callers((p, name))}
        fewer = set(sorted(callers)[1:])
        wrong = [callers | {c} for c in namesakes - callers] + ([fewer] if fewer else [])
        wrong += [repo.callers(ref) for ref in rng.sample(defined, min(12, len(defined)))]
        made = _options(rng, _refs_text(callers), [_refs_text(w) for w in wrong if w])
        question = (
            f"Which functions call the function `{name}` defined in `{path}` directly? "
            "(Each function is written as file:name.)"
        )
    elif kind == "impact":
        touched = {path} | {p for p, _ in callers}
        if not callers:
            return None
        namesake_files = {p for q in repo.definitions(name) if q != path for p, _ in repo.callers((q, name))}
        wrong_files = [touched | {p} for p in namesake_files - touched] + [touched - {p} for p in touched if p != path]
        wrong_files += [
            {p} | {c for c, _ in repo.callers((p, n))} for p, n in rng.sample(defined, min(12, len(defined)))
        ]
        made = _options(rng, ", ".join(sorted(touched)), [", ".join(sorted(w)) for w in wrong_files])
        question = (
            f"The parameters of `{name}` in `{path}` change, so every direct call to it must change too. "
            "Which files does the change touch, the file that defines it included?"
        )
    else:
        raise ValueError(f"unknown codeqa-like question kind {kind!r}")
    return None if made is None else (question, *made)


def codeqa_like(size_tokens: int, seed: int = 0, index: int = 0) -> Task:
    """A repository of about size_tokens * 4 / MODULE_CHARS modules and one multiple-choice question about it."""
    rng = rng_for("codeqa-like", size_tokens, seed, index)
    budget = size_tokens * 4
    n_modules = max(4, budget // MODULE_CHARS)
    while True:
        repo = make_repo(rng, n_modules)
        files = [FILE_HEADER.format(path=p) + render_module(p, fs, rng) + "\n" for p, fs in repo.modules.items()]
        if sum(map(len, files)) <= budget or n_modules <= 4:
            break
        n_modules = max(4, round(n_modules * 0.93))
    # Kinds take turns; one that finds no question with four distinct options here yields to the next.
    for attempt in range(600):
        kind = QUESTION_KINDS[(index + attempt // 200) % len(QUESTION_KINDS)]
        made = _question(kind, rng, repo)
        if made:
            break
    else:
        raise AssertionError("no question with four distinct options in this repository")
    question, options, gold = made
    listed = "\n".join(f"({letter}) {option}" for letter, option in zip(LETTERS, options))
    return Task(
        id=f"codeqa-like-{size_label(size_tokens)}-s{seed}-{index}",
        family="codeqa-like",
        kind=kind,
        size_tokens=size_tokens,
        context="".join(files),
        question=f"{question}\n{listed}\n{_CHOICE_FORMAT}",
        gold=gold,
        meta={"files": len(files), "functions": sum(len(fs) for fs in repo.modules.values())},
    )


# --------------------------------------------------------------------------------------------
# the reference solver: the answer from the source text alone


def call_graph(context: str) -> dict[Ref, set[Ref]]:
    """Each function (file, name) and the functions it calls, resolved through the file's imports."""
    parts = re.split(r"^# ===== file: (\S+) =====\n", context, flags=re.M)
    graph: dict[Ref, set[Ref]] = {}
    for path, source in zip(parts[1::2], parts[2::2]):
        try:
            tree = ast.parse(source)
        except SyntaxError:  # a file cut by the window: what remains of the others still counts
            continue
        names: dict[str, Ref] = {}
        aliases: dict[str, str] = {}
        for node in tree.body:
            if isinstance(node, ast.ImportFrom):
                names.update({a.name: (f"{(node.module or '').replace('.', '/')}.py", a.name) for a in node.names})
            elif isinstance(node, ast.Import):
                aliases.update({a.asname or a.name: f"{a.name.replace('.', '/')}.py" for a in node.names})
            elif isinstance(node, ast.FunctionDef):
                names[node.name] = (path, node.name)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                calls = graph.setdefault((path, node.name), set())
                for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
                    if isinstance(call.func, ast.Name) and call.func.id in names:
                        calls.add(names[call.func.id])
                    elif isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name):
                        if call.func.value.id in aliases:
                            calls.add((aliases[call.func.value.id], call.func.attr))
    return graph


def solve_from_text(context: str, question: str) -> str | None:
    """The letter of the option the source text supports, or None."""
    graph = call_graph(context)
    options = dict(re.findall(r"^\(([ABCD])\) (.*)$", question, re.M))
    if found := re.search(r"In which file is the function `(\w+)` defined\?", question):
        answer = ", ".join(sorted({p for p, n in graph if n == found.group(1)}))
    elif found := re.search(r"call the function `(\w+)` defined in `(\S+)`", question):
        target = (found.group(2), found.group(1))
        answer = _refs_text({ref for ref, calls in graph.items() if target in calls})
    elif found := re.search(r"The parameters of `(\w+)` in `(\S+)` change", question):
        target = (found.group(2), found.group(1))
        answer = ", ".join(sorted({target[0]} | {p for (p, _), calls in graph.items() if target in calls}))
    else:
        return None
    return next((letter for letter, option in options.items() if option == answer), None)
