"""A batch's finished results, kept as they come (`RLM.batch(..., results_path=...)`), so that a re-run of the same
questions after a crash or an interrupt asks only those not done."""

from __future__ import annotations

import concurrent.futures
import pickle
import threading
from pathlib import Path

from rlm_kernel.core.result import RLMResult


class DoneResults:
    """The results a batch has so far, by question index, and in `path` (appended pickles of (index, query, result))
    as each question finishes; a re-run of the same questions with the same path runs only those not there."""

    def __init__(self, path: str | Path | None, questions: list[tuple[object, str]]) -> None:
        self.path = None if path is None else Path(path)
        self.results: dict[int, RLMResult] = {}
        self._lock = threading.Lock()
        if self.path is None or not self.path.exists():
            return
        with self.path.open("rb") as file:
            while True:
                try:
                    index, query, result = pickle.load(file)
                except EOFError:
                    break
                except (pickle.UnpicklingError, ValueError):  # a write cut short by a crash: what came before stands
                    break
                if index < len(questions) and questions[index][1] == query:
                    self.results[index] = result

    def keep(self, index: int, future: concurrent.futures.Future[RLMResult]) -> None:
        """Keep a finished question's result (in `path` too, when given); an interrupted one is not done."""
        if future.cancelled() or future.exception() is not None:
            return
        result = future.result()
        if result.status == "interrupted":
            return
        with self._lock:
            if index in self.results:
                return  # kept already: by the future's callback, or by the batch once every future was done
            self.results[index] = result
            if self.path is not None:
                with self.path.open("ab") as file:
                    pickle.dump((index, result.query, result), file)
