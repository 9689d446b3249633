"""One question, run: `run_question(config, context, query, ...)`, which `RLM.completion`, sessions and batches call.

Everything a run needs is either in its `RunConfig` (data, which pickles) or passed here explicitly: the
budget its calls are charged to, the call slots they take, the REPLs its nodes run in, what it is told of
earlier questions, the answer type, and the parts that live only in this process (`Local`: model clients,
event handlers, an approver). Left out, each is built from the config, which is what another process does.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rlm_kernel.core.aio import CancelScope, RunCancelled
from rlm_kernel.core.approve import Approver, console_approver
from rlm_kernel.core.clients import Models, pricing_warnings
from rlm_kernel.core.config import RunConfig
from rlm_kernel.core.context import check_context
from rlm_kernel.core.errors import RunInterrupted, UnpricedModelWarning
from rlm_kernel.core.fanout import SharedByProcesses, run_elsewhere
from rlm_kernel.core.ledger import Budget, Ledger
from rlm_kernel.core.node import Node
from rlm_kernel.core.repl import REPL, repl_factory
from rlm_kernel.core.result import RLMResult
from rlm_kernel.core.slots import CallSlots, Slots
from rlm_kernel.core.telemetry import Telemetry, telemetry_for
from rlm_kernel.core.trace import EventHandler
from rlm_kernel.core.tree import CallTree, Outcome
from rlm_kernel.core.typed import AnswerType


@dataclass
class Local:
    """What a run uses that lives only in this process: the model clients, the event handlers, the approver,
    the telemetry plug-in, and the executor its fan-outs run on."""

    models: Models
    on_event: list[EventHandler] = field(default_factory=list)
    approver: Approver | None = None  # None with config.approve: ask on the console
    telemetry: Telemetry | None = None
    # where the children of rlm_query_batched run (None: threads of this process); a concurrent.futures.Executor too
    executor: SharedByProcesses | None = None

    @classmethod
    def for_config(cls, config: RunConfig) -> Local:
        """What another process that got only the config runs with."""
        return cls(Models.connect(config), telemetry=telemetry_for(config.telemetry))


class Asker(Protocol):
    """What a session or a batch asks its questions with (core/engine.py: RLM)."""

    config: RunConfig

    @property
    def local(self) -> Local: ...

    def new_repl(self) -> REPL: ...


def run_question(
    config: RunConfig,
    context: object,
    query: str,
    *,
    local: Local | None = None,
    budget: Budget | None = None,
    slots: Slots | None = None,
    repl: REPL | None = None,
    new_repl: Callable[[], REPL] | None = None,
    history: str | None = None,
    answer_type: AnswerType | None = None,
    scope: CancelScope | None = None,
    telemetry_link: str | None = None,
    telemetry_parent: str | None = None,
) -> RLMResult:
    """Answer `query` about `context` under `config`. Raises RunInterrupted (a KeyboardInterrupt) with the partial result.

    `budget` (default: a Ledger of config.limits) is charged every model call; `slots` (default: CallSlots of
    config.loop.concurrency) bound the calls in flight; `repl` is the root's namespace (default: a fresh one
    from `new_repl`, closed at the end), `new_repl` makes every other node's (default: as the config says);
    `history` is what the root is told of earlier questions first; `scope` cancels the run from elsewhere;
    `telemetry_link` / `telemetry_parent`: W3C traceparents the run's spans link to (its batch's span) or join
    (a driver's span, carried to another process)."""
    check_context(context)
    local = local or Local.for_config(config)
    scope = scope or CancelScope()
    for warning in pricing_warnings(config, local.models):
        warnings.warn(warning, UnpricedModelWarning, stacklevel=3)
    approver = local.approver or (console_approver() if config.approve else None)
    new_repl = new_repl or repl_factory(config)
    cluster = local.executor
    # children in other processes charge the run's budget and take its slots: ones those processes reach
    if budget is None:
        budget = cluster.shared_budget(config.limits) if cluster else Ledger(config.limits)
    if slots is None:
        slots = cluster.shared_slots(config.loop.concurrency) if cluster else CallSlots(config.loop.concurrency)
    tree = CallTree(
        config,
        local.models,
        scope,
        approver,
        budget=budget,
        slots=slots,
        on_event=[*local.on_event, *_telemetry(local.telemetry, telemetry_link, telemetry_parent)],
        new_repl=new_repl,
        fan_out=None if cluster is None else functools.partial(run_elsewhere, executor=cluster),
    )
    own_repl = repl is None
    repl = repl or new_repl()
    root = Node(tree, context, query, depth=0, parent_id=None, repl=repl, history=history, answer_type=answer_type)
    try:
        outcome = root.run()
    except (KeyboardInterrupt, RunCancelled):
        scope.cancel()
        tree.stop_approval()
        left = tree.stop_children()
        tree.close_open_nodes()
        tree.close()
        partial = Outcome("interrupted", root.partial_answer(), "interrupted")
        if answer_type is not None:
            partial.answer, partial.error = answer_type.fitted(partial.answer, partial.error)
        raise RunInterrupted(tree.result(query, partial, left)) from None
    except BaseException:
        tree.close()
        raise
    finally:
        if own_repl:
            repl.close()
    # The run's whole tree ends with it: children a block left running are stopped, and no model call
    # starts after this returns (the scope refuses them); a thread blocked in C code is reported.
    scope.cancel(wait=False)  # the run's time is not spent on calls it no longer needs
    left = tree.stop_children()
    tree.close_open_nodes("the run ended before this call did")
    tree.close()
    return tree.result(query, outcome, left)


def _telemetry(plugin: Telemetry | None, link: str | None, parent: str | None) -> list[EventHandler]:
    """The run's own telemetry handler: each run one, since a batch's questions interleave their events."""
    return [] if plugin is None else [plugin.run(parent=parent, link=link)]
