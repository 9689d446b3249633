"""The model clients of a run, made in the process that runs it from the run's config."""

from __future__ import annotations

from rlm_kernel.core.cache import with_cache
from rlm_kernel.core.config import ModelSpec, RunConfig, reveal
from rlm_kernel.core.errors import ConfigError
from rlm_kernel.core.lm import LM
from rlm_kernel.core.lm.transports import make_lm


class Models:
    """The model clients of a run, made in the process that runs it: the root's and the sub-model's (often one)."""

    def __init__(self, root: LM, sub: LM) -> None:
        self.root, self.sub = root, sub
        self._windows: dict[str, int | None] = {}

    @classmethod
    def connect(cls, config: RunConfig, lm: LM | None = None) -> Models:
        """Clients for `config`'s models; `lm`: the caller's own LM object, which serves both."""
        if lm is not None or config.root.transport == "lm":
            if lm is None:
                raise ConfigError("this run's model is a Python object (RLM(lm=...)), which cannot leave its process")
            cached = with_cache(lm, config.cache, getattr(lm, "api_base", None), config.cache_max_mb)
            return cls(cached, cached)
        root = _make_lm(config, config.root, "api_key")
        sub = root if config.sub.same_server(config.root) else _make_lm(config, config.sub, "sub_api_key")
        return cls(root, sub)

    def sub_input_window(self, config: RunConfig, model: str) -> int | None:
        """Input tokens a sub-call to `model` may send: `sub_window`, else the LM's model info (None: unknown)."""
        if config.loop.sub_window is not None:
            return config.loop.sub_window
        if model not in self._windows:
            window = getattr(self.sub, "input_window", None)
            self._windows[model] = window(model) if callable(window) else None
        return self._windows[model]


def _make_lm(config: RunConfig, spec: ModelSpec, key_setting: str) -> LM:
    router = None if config.router is None else [dict(entry) for entry in config.router]
    plain = make_lm(spec.transport, spec.api_base, reveal(spec.api_key), router, config.prices, key_setting, config.tls)
    return with_cache(plain, config.cache, spec.api_base, config.cache_max_mb)


def pricing_warnings(config: RunConfig, models: Models, max_cost_usd: float | None = None) -> list[str]:
    """Why `max_cost_usd` (the config's, or a batch's) cannot bind: one line per model of the run that has no price."""
    max_cost_usd = config.limits.max_cost_usd if max_cost_usd is None else max_cost_usd
    if max_cost_usd is None:
        return []
    pairs = [(config.root.model, models.root), (config.sub.model, models.sub)]
    unpriced = list(dict.fromkeys(model for model, lm in pairs if lm.price(model, 1, 1) is None))
    return [
        f"max_cost_usd={max_cost_usd:g} cannot bind: litellm has no price for {model}; give one with "
        f'prices={{"{model}": {{"input": <$ per 1M tokens>, "output": <$ per 1M tokens>}}}} '
        "(rlm run --prices, %config RLMMagics.prices) or litellm.register_model"
        for model in unpriced
    ]
