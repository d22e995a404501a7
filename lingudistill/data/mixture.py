"""Weighted sampling over the mixture's sources, deterministic and resumable.

Draw n picks a source with probability proportional to its weight, from a generator seeded by (seed, n). Each
source is read in shuffled epochs: epoch e of source s is a permutation seeded by (seed, s, e), so every record
is seen once per epoch. The whole state is therefore a few counters, and a sampler restored from
`state_dict()` continues with exactly the records the original would have produced.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random

from lingudistill.data.records import Record

_STATE_VERSION = 1


class MixtureSampler:
    def __init__(self, records: dict[str, list[Record]], weights: dict[str, float], seed: int) -> None:
        _check_mixture(records, weights)
        self.records = records
        self.seed = seed
        self.names = sorted(records)
        self._cumulative = list(itertools.accumulate(weights[name] for name in self.names))
        self.draws = 0
        self._epoch = dict.fromkeys(self.names, 0)
        self._position = dict.fromkeys(self.names, 0)
        self._order = {name: self._permutation(name, 0) for name in self.names}

    def next(self) -> Record:
        name = self._pick_source()
        self.draws += 1
        if self._position[name] == len(self.records[name]):
            self._epoch[name] += 1
            self._position[name] = 0
            self._order[name] = self._permutation(name, self._epoch[name])
        index = self._order[name][self._position[name]]
        self._position[name] += 1
        return self.records[name][index]

    def __iter__(self) -> MixtureSampler:
        return self

    def __next__(self) -> Record:
        return self.next()

    def state_dict(self) -> dict:
        """Plain ints, strs and dicts: JSON-serialisable and loadable with torch.load(weights_only=True)."""
        return {
            "version": _STATE_VERSION,
            "seed": self.seed,
            "draws": self.draws,
            "sources": {
                name: {"size": len(self.records[name]), "epoch": self._epoch[name], "position": self._position[name]}
                for name in self.names
            },
        }

    def load_state_dict(self, state: dict) -> None:
        self._check_state(state)
        self.draws = state["draws"]
        for name, source in state["sources"].items():
            self._epoch[name], self._position[name] = source["epoch"], source["position"]
            self._order[name] = self._permutation(name, source["epoch"])

    def _check_state(self, state: dict) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported mixture sampler state version {state.get('version')!r}")
        if state["seed"] != self.seed:
            raise ValueError(f"the sampler state has seed {state['seed']}, this sampler {self.seed}")
        sizes = {name: source["size"] for name, source in state["sources"].items()}
        expected = {name: len(self.records[name]) for name in self.names}
        if sizes != expected:
            raise ValueError(
                f"the mixture changed since the state was saved: records per source {sizes}, now {expected}"
            )

    def _pick_source(self) -> str:
        draw = random.Random(json.dumps(["source", self.seed, self.draws])).random() * self._cumulative[-1]
        return self.names[min(bisect.bisect_right(self._cumulative, draw), len(self.names) - 1)]

    def _permutation(self, name: str, epoch: int) -> list[int]:
        order = list(range(len(self.records[name])))
        random.Random(json.dumps(["epoch", self.seed, name, epoch])).shuffle(order)
        return order


def _check_mixture(records: dict[str, list[Record]], weights: dict[str, float]) -> None:
    if not records:
        raise ValueError("the mixture has no sources")
    if set(records) != set(weights):
        raise ValueError(f"sources {sorted(records)} and weights {sorted(weights)} name different sources")
    empty = sorted(name for name, source in records.items() if not source)
    if empty:
        raise ValueError(f"mixture sources without records: {', '.join(empty)}")
    bad = sorted(name for name, weight in weights.items() if not weight > 0)
    if bad:
        raise ValueError(f"mixture weights must be positive: {', '.join(bad)}")
