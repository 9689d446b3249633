"""The run specification: every setting of a run, resolved once from the settings table, as frozen values.

A `RunConfig` holds data only (no model clients, locks, pools or callables made at run time), so it pickles
and can be sent to another process or machine, which rebuilds what a run needs from it (core/run.py). Two
kinds of values need care when they travel: an API key (`Secret`) and the user's tools (`ToolRef`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.ledger import Limits
from rlm_kernel.core.lm.transports import TLS, choose_transport
from rlm_kernel.core.settings import recorded, resolve, source


@dataclass(frozen=True, eq=False)
class Secret:
    """An API key. Its repr never shows it; one read from an environment variable pickles as the variable's
    name, so that the process that loads it reads its own environment (the key never travels)."""

    value: str = field(repr=False)
    env: str | None = None  # the variable it came from

    @classmethod
    def from_env(cls, env: str) -> Secret | None:
        value = os.environ.get(env)
        return None if not value else cls(value, env)

    def reveal(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"Secret(${self.env})" if self.env else "Secret('***')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (self.value, self.env) == (other.value, other.env)

    def __hash__(self) -> int:
        return hash((self.value, self.env))

    def __reduce__(self) -> tuple[Any, ...]:
        if self.env is not None:
            return (_secret_from_env, (self.env,))
        return (Secret, (self.value,))


def _secret_from_env(env: str) -> Secret | None:
    secret = Secret.from_env(env)
    if secret is None:
        raise ConfigError(f"the run's API key comes from ${env}, which is not set in this process")
    return secret


def reveal(secret: Secret | None) -> str | None:
    return None if secret is None else secret.reveal()


@dataclass(frozen=True)
class ModelSpec:
    """One model of a run (the root, or the sub-model that serves sub-calls and child RLMs)."""

    model: str
    api_base: str | None = None
    api_key: Secret | None = None
    # How it is called: "direct", "litellm" (auto resolved for this model), or "lm" (the caller's own LM object).
    transport: str = "litellm"
    params: Mapping[str, Any] = field(default_factory=dict)  # sampling parameters sent with each call

    def same_server(self, other: ModelSpec) -> bool:
        """Whether one client serves both (the same server, key and transport)."""
        return (self.api_base, self.api_key, self.transport) == (other.api_base, other.api_key, other.transport)


@dataclass(frozen=True)
class Loop:
    """The shape of the tree and of each node's loop."""

    max_depth: int = 1
    max_iterations: int = 20
    child_max_iterations: int = 10
    max_output_chars: int = 10_000
    cell_timeout: float | None = None
    concurrency: int = 16
    sub_calls: bool = True
    instructions: str | None = None
    session_tokens: int = 4000
    stream: bool = False
    sub_window: int | None = None  # input tokens a sub-call may send (None: the sub-model's own window)


@dataclass(frozen=True)
class CallPolicy:
    """How one model call is made: its output cap under a budget, its deadline, its retries."""

    max_output_tokens: int = 4096
    call_timeout: float = 120.0
    retries: int = 3
    retry_backoff: float = 0.5
    max_retry_wait: float = 60.0  # the most a server's Retry-After makes a retry wait


@dataclass(frozen=True)
class Isolation:
    """Where model code runs: None (this process) or a registered isolation mode, with its limits."""

    mode: str | None = None
    limits: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolRef:
    """One of the user's tools: the function, and where another process imports it from ("module:function").

    A tool with no such address (a lambda, a function defined inside another, or in __main__) works in this
    process; pickling the config that holds it raises ConfigError naming it."""

    name: str
    function: Callable[..., Any] = field(repr=False)
    address: str | None = None

    @classmethod
    def of(cls, name: str, function: Callable[..., Any]) -> ToolRef:
        return cls(name, function, importable_address(function))

    def __reduce__(self) -> tuple[Any, ...]:
        if self.address is None:
            raise ConfigError(
                f"tool {self.name!r} cannot leave this process: define it in an importable module "
                "(package.module:function, as rlm run --tools takes it) to run the question elsewhere"
            )
        return (load_tool, (self.name, self.address))


def importable_address(function: Callable[..., Any]) -> str | None:
    """'module:qualified.name' when importing it there gives this very object back; None otherwise."""
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        found = _lookup(module, qualname)
    except (ImportError, AttributeError):
        return None
    return f"{module}:{qualname}" if found is function else None


def load_tool(name: str, address: str) -> ToolRef:
    module, _, qualname = address.partition(":")
    try:
        return ToolRef(name, _lookup(module, qualname), address)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"tool {name!r}: cannot import {address!r} in this process: {exc}") from None


def _lookup(module: str, qualname: str) -> Any:
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


@dataclass(frozen=True)
class RunConfig:
    """Everything that describes a run, resolved from the settings table; data only, so it pickles."""

    root: ModelSpec
    sub: ModelSpec
    limits: Limits = field(default_factory=Limits)
    loop: Loop = field(default_factory=Loop)
    calls: CallPolicy = field(default_factory=CallPolicy)
    isolation: Isolation = field(default_factory=Isolation)
    tools: tuple[ToolRef, ...] = ()
    approve: bool = False  # ask before each block runs (the asking is the caller's: an Approver)
    cache: str | None = None
    cache_max_mb: float = 1024.0  # the bound of a disk cache (least recently used replies go first)
    prices: Mapping[str, Mapping[str, float]] | None = None
    router: tuple[Mapping[str, Any], ...] | None = field(default=None, repr=False)  # litellm Router's model list
    trace_path: str | None = None
    tls: TLS = field(default_factory=TLS)  # how servers' certificates are checked, on both transports
    telemetry: str | None = None  # a telemetry plug-in's name, "off", or None: the one its variable turns on
    recorded: Mapping[str, Any] = field(default_factory=dict, repr=False)  # what the root's call_start records

    @property
    def tool_functions(self) -> dict[str, Callable[..., Any]]:
        return {tool.name: tool.function for tool in self.tools}

    @property
    def secrets(self) -> list[str]:
        """The API keys, for the redactor."""
        return [s for s in (reveal(self.root.api_key), reveal(self.sub.api_key)) if s]

    @property
    def budgeted(self) -> bool:
        """Whether a token or cost budget binds, under which each call reserves (and is capped at) its output."""
        return self.limits.max_tokens is not None or self.limits.max_cost_usd is not None

    @classmethod
    def from_settings(
        cls,
        given: Mapping[str, Any],
        *,
        tools: Mapping[str, Callable[..., Any]] | None = None,
        router: list[dict[str, Any]] | None = None,
        own_lm: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> RunConfig:
        """The config of the settings `given` (others from the environment, else their defaults).

        `own_lm`: the caller passes its own LM object, which both models use (transport "lm")."""
        environ = os.environ if environ is None else environ
        s = resolve(given, environ)
        if s["model"] is None:
            raise ConfigError("no model: pass model=, or set RLM_MODEL")

        def secret(name: str) -> Secret | None:
            where = source(name, given, environ)
            if s[name] is None:
                return None
            return Secret(s[name], where[1:] if where.startswith("$") else None)

        root_key = secret("api_key")
        sub_key = secret("sub_api_key") or root_key
        sub_base = s["sub_api_base"] or s["api_base"]
        sub_model = s["sub_model"] or s["model"]
        root_params = _sampling(s["temperature"], s["top_p"], s["seed"], s["model_params"])
        sub_params = _sampling(
            _either(s["sub_temperature"], s["temperature"]),
            _either(s["sub_top_p"], s["top_p"]),
            _either(s["sub_seed"], s["seed"]),
            _either(s["sub_model_params"], s["model_params"]),
        )
        root_transport = _transport(s["transport"], s["model"], s["api_base"], router, own_lm, root_params)
        sub_transport = _transport(s["transport"], sub_model, sub_base, router, own_lm, sub_params)
        transports = {"model": "lm"} if own_lm else {"model": root_transport, "sub_model": sub_transport}
        return cls(
            root=ModelSpec(s["model"], s["api_base"], root_key, root_transport, root_params),
            sub=ModelSpec(sub_model, sub_base, sub_key, sub_transport, sub_params),
            limits=Limits(s["max_llm_calls"], s["max_tokens"], s["max_cost_usd"], s["max_seconds"]),
            loop=Loop(
                max_depth=s["max_depth"],
                max_iterations=s["max_iterations"],
                child_max_iterations=s["child_max_iterations"] or max(3, s["max_iterations"] // 2),
                max_output_chars=s["max_output_chars"],
                cell_timeout=s["cell_timeout"],
                concurrency=s["concurrency"],
                sub_calls=s["sub_calls"],
                instructions=s["instructions"],
                session_tokens=s["session_tokens"],
                stream=s["stream"],
                sub_window=s["sub_window"],
            ),
            calls=CallPolicy(
                s["max_output_tokens"], s["call_timeout"], s["retries"], s["retry_backoff"], s["max_retry_wait"]
            ),
            isolation=Isolation(s["isolation"], s["isolation_limits"] or {}),
            tools=tuple(ToolRef.of(name, function) for name, function in (tools or {}).items()),
            approve=s["approve"],
            cache=s["cache"],
            cache_max_mb=s["cache_max_mb"],
            prices=s["prices"],
            router=None if router is None else tuple(router),
            trace_path=s["trace_path"],
            tls=TLS(s["tls_verify"], s["ca_bundle"]),
            telemetry=s["telemetry"],
            recorded=recorded(s, transports),
        )


def _either(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _sampling(temperature: float | None, top_p: float | None, seed: int | None, extra: Any) -> dict[str, Any]:
    """The sampling parameters sent with each call; unset ones are left to the provider."""
    named = {"temperature": temperature, "top_p": top_p, "seed": seed}
    return {**(extra or {}), **{k: v for k, v in named.items() if v is not None}}


def _transport(
    setting: str, model: str, api_base: str | None, router: Any, own_lm: bool, params: dict[str, Any]
) -> str:
    """The transport a model is called through: the setting, with "auto" resolved for this model and server."""
    return "lm" if own_lm else choose_transport(setting, model, api_base, router, params)
