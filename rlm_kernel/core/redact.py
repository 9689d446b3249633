"""Keeping secrets out of everything the engine writes or sends.

One redactor replaces, wherever text leaves the engine (events, so every trace, export and view;
observations and prompts sent to models; error messages):

- the values of environment variables whose names end in KEY, TOKEN, SECRET, PASSWORD, PASS, PWD or
  CREDENTIALS (PWD and OLDPWD themselves are directories, not secrets), passwords inside URLs held by any
  environment variable, the passwords of ~/.netrc, and secrets given explicitly (an `api_key=`);
- each of those in the forms it takes on the way out: plain, repr-escaped (`print(os.environ)` doubles
  backslashes), JSON-escaped, URL-encoded, and those forms of each other;
- whatever its origin, text shaped like a credential: a password in a URL (`scheme://user:password@host`),
  a .netrc `password` entry, and common key shapes (`sk-...`, `ghp_...` and GitHub's other token prefixes,
  `AKIA...`/`ASIA...`, `hf_...`, `xox?-...`, `AIza...`).
"""

from __future__ import annotations

import json
import netrc
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus, unquote

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASS|PWD|CREDENTIALS)$", re.I)
_NOT_SECRET_NAMES = {"PWD", "OLDPWD"}
_MIN_SECRET_LENGTH = 6  # shorter values are too likely to occur by chance
_URL_PASSWORD = re.compile(r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@'\"]*:)(?P<secret>[^/\s@'\"]+)(?=@)")
_NETRC_PASSWORD = re.compile(r"(?P<keep>\bmachine\s+\S+\s+login\s+\S+\s+password\s+)(?P<secret>\S+)")
_KEY_SHAPES = (
    r"sk-[A-Za-z0-9_-]{16,}",  # OpenAI, Anthropic (sk-ant-...), and others following them
    r"(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}",
    r"github_pat_[A-Za-z0-9_]{30,}",
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",
    r"hf_[A-Za-z0-9]{30,}",
    r"xox[abposr]-[A-Za-z0-9-]{10,}",
    r"AIza[0-9A-Za-z_-]{35}",
)
MAX_STREAM_HOLD = 1024  # characters of a streamed reply held back at most, while they may begin a secret
_SHAPES = re.compile(r"(?<![A-Za-z0-9])(?:" + "|".join(_KEY_SHAPES) + r")")
# Literals each pattern needs: `in` finds them about ten times faster than the patterns scan a text without
# them, and sub-call prompts of 100 KB each pass through here (figure 5's 10M-token task: 400 of them).
_KEY_PREFIXES = ("sk-", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "AKIA", "ASIA", "hf_", "xox", "AIza")


def _forms(secret: str) -> set[str]:
    """`secret` as it may appear in output: plain, repr- and JSON-escaped, URL-encoded, and one level nested."""
    encoders = (
        lambda s: repr(s)[1:-1],
        lambda s: json.dumps(s)[1:-1],
        lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
        lambda s: quote(s, safe=""),
        quote_plus,
    )
    forms = {secret}
    for _ in range(2):
        forms |= {encode(form) for form in forms for encode in encoders}
    return forms


def environment_secrets(environ: dict[str, str] | None = None) -> set[str]:
    """The secret values of an environment (os.environ by default) and of ~/.netrc."""
    environ = dict(os.environ if environ is None else environ)
    found = {v for k, v in environ.items() if _SECRET_NAME.search(k) and k.upper() not in _NOT_SECRET_NAMES}
    for value in environ.values():
        found.update(unquote(m.group("secret")) for m in _URL_PASSWORD.finditer(value))
    try:
        hosts = netrc.netrc(os.path.expanduser("~/.netrc")).hosts.values()
        found.update(password for _, _, password in hosts if password)
    except (OSError, netrc.NetrcParseError):
        pass
    return found


class Redactor:
    def __init__(self, extra: Iterable[str | None] = ()) -> None:
        found = environment_secrets()
        found.update(v for v in extra if v)
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted((s for s in found if len(s) >= _MIN_SECRET_LENGTH), key=len, reverse=True)
        forms = {form for secret in self.secrets for form in _forms(secret) if len(form) >= _MIN_SECRET_LENGTH}
        literal = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        self._literals = re.compile(literal) if literal else None
        self._forms = forms
        self._form_starts: set[str] | None = None  # every prefix of every form, made when a reply first streams

    def text(self, value: str) -> str:
        if self._literals is not None:
            value = self._literals.sub(REDACTED, value)
        if any(prefix in value for prefix in _KEY_PREFIXES):
            value = _SHAPES.sub(REDACTED, value)
        for needed, pattern in (("://", _URL_PASSWORD), ("password", _NETRC_PASSWORD)):
            if needed in value:
                value = pattern.sub(lambda m: m.group("keep") + REDACTED, value)
        return value

    def unsure_tail(self, text: str) -> int:
        """How many of `text`'s last characters may be the start of a secret that text still to come completes:
        its last word (key shapes and URL passwords have no spaces) or a prefix of a secret's form, at most
        MAX_STREAM_HOLD characters (and never fewer than the longest form)."""
        if self._form_starts is None:
            self._form_starts = {form[:end] for form in self._forms for end in range(1, len(form))}
        longest = max(map(len, self._forms), default=0)
        word = len(text) - 1 - max(text.rfind(space) for space in " \t\n\r\f\v")
        started = next((k for k in range(min(longest, len(text)), 0, -1) if text[-k:] in self._form_starts), 0)
        return min(max(word, started), max(MAX_STREAM_HOLD, longest))

    def data(self, value: Any) -> Any:
        """`value` with every string inside it redacted (dicts, lists and tuples walked)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.data(v) for v in value)
        return value


class StreamRedactor:
    """Redacts a text that arrives in pieces (a streamed reply). Each piece redacted alone lets a secret split
    across two pieces through, so the whole text so far is redacted, and its last characters are held back while
    they may be the start of a secret (`Redactor.unsure_tail`); `add(..., final=True)` releases the rest."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._raw = ""
        self._shown = ""  # the redacted text given out so far

    def restart(self) -> None:
        """The text starts again (a retried call): what was given out stays given out."""
        self._raw = self._shown = ""

    def add(self, piece: str, final: bool = False) -> str:
        """What can be shown now, after what was shown before: redacted, never the start of a secret."""
        self._raw += piece
        redacted = self._redactor.text(self._raw)
        if not final:
            unsure = self._redactor.unsure_tail(self._raw)
            if unsure and not redacted.endswith(self._raw[-unsure:]):  # a secret inside the tail was redacted
                unsure *= len(REDACTED) + 1
            redacted = redacted[: max(0, len(redacted) - unsure)]
        if len(redacted) <= len(self._shown) or not redacted.startswith(self._shown):
            return ""  # nothing new, or a redaction reached back into what was shown: the iteration event has it whole
        new, self._shown = redacted[len(self._shown) :], redacted
        return new
