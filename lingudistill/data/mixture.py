"""Weighted sampling over the mixture's sources, deterministic and resumable.

Draw n picks a source with probability proportional to its weight, from a generator seeded by (seed, n). Each
source is read in shuffled epochs: epoch e of source s is a permutation seeded by (seed, s, e), so every record
is seen once per epoch. The whole state is therefore a few counters, and a sampler restored from
`state_dict()` continues with exactly the records the original would have produced.

The sampler draws positions and reads only the record drawn, so a source may be any sequence of records:
`load_sources` gives indexed ones that hold no records. A permutation is an array of 4-byte positions, shuffled
by `random.shuffle` itself, so it is the permutation a list of positions got (the order of published runs).

`LengthGroupedSampler` reorders those draws inside pools so that a micro-batch holds records of similar lengths;
see its docstring.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
from array import array
from collections.abc import Callable, Sequence

from lingudistill.data.records import Record

_STATE_VERSION = 1
# A pool is this many micro-batches of draws, grouped at once; sorted by prompt length, it is cut into slabs of
# SLAB micro-batches that are sorted by response length. 64 and 8 reach 0.92 token efficiency at batch 8 on the
# VLM length mix of bench/token_efficiency.py (32/4: 0.89, 128/8: 0.94, with more records encoded ahead).
POOL_MICRO_BATCHES = 64
SLAB_MICRO_BATCHES = 8
Lengths = Callable[[Record], tuple[int, int]]
Sources = dict[str, Sequence[Record]]


class MixtureSampler:
    def __init__(self, records: Sources, weights: dict[str, float], seed: int) -> None:
        _check_mixture(records, weights)
        self.records = records
        self.seed = seed
        self.names = sorted(records)
        self._cumulative = list(itertools.accumulate(weights[name] for name in self.names))
        self.draws = 0
        self._epoch = dict.fromkeys(self.names, 0)
        self._position = dict.fromkeys(self.names, 0)
        self._order: dict[str, array] = {}
        for name in self.names:
            self._shuffle(name, 0)

    def next(self) -> Record:
        name, index = self.next_index()
        return self.records[name][index]

    def next_index(self) -> tuple[str, int]:
        """The next draw as (source, position in it), without reading the record."""
        name = self._pick_source()
        self.draws += 1
        if self._position[name] == len(self.records[name]):
            self._epoch[name] += 1
            self._position[name] = 0
            self._shuffle(name, self._epoch[name])
        index = self._order[name][self._position[name]]
        self._position[name] += 1
        return name, index

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
            self._shuffle(name, source["epoch"])

    def _check_state(self, state: dict) -> None:
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported mixture sampler state version {state.get('version')!r}")
        if "pool" in state:
            raise ValueError("the sampler state was saved with group_by_length 'pool'; the spec now asks another mode")
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

    def _shuffle(self, name: str, epoch: int) -> None:
        """Set the order of `name`'s records in `epoch`."""
        self._order.pop(name, None)  # the old epoch's order goes first: one permutation per source in memory
        size = len(self.records[name])
        order = array("I" if size <= 2**32 else "q", range(size))
        # random.shuffle asks the generator the same questions of any sequence of this length: the same order
        random.Random(json.dumps(["epoch", self.seed, name, epoch])).shuffle(order)
        self._order[name] = order


class LengthGroupedSampler:
    """The mixture's draws, reordered inside pools so that each micro-batch holds records of similar lengths.

    `collate` pads every prompt to the micro-batch's longest prompt P and every response to its longest response R,
    so a micro-batch of B records computes B (max P + max R) tokens for sum(P + R) real ones. A pool is the next
    POOL_MICRO_BATCHES x B mixture draws: sorted by prompt length, cut into slabs of SLAB_MICRO_BATCHES
    micro-batches, each slab sorted by response length and cut into micro-batches, which are handed out in an order
    shuffled by (seed, pool), so training does not run from short to long.
    A pool holds exactly the draws the plain sampler would make, so the sources' weights and the once-per-epoch
    guarantee are unchanged; only the order inside a pool differs. The state is the mixture's state at the pool's
    start and the count already handed out: a restored sampler redraws the pool and continues exactly.
    `lengths(record)` gives (prompt tokens, response tokens); it is asked once per record and remembered.
    """

    def __init__(self, mixture: MixtureSampler, micro_batch: int, lengths: Lengths) -> None:
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be at least 1, got {micro_batch}")
        self.mixture = mixture
        self.micro_batch = micro_batch
        self.lengths = lengths
        # per source, the lengths of the records asked so far, by position: prompt + 1 at 2i, response + 1 at 2i + 1
        # (0: not asked yet). 8 bytes a record of a source once it is drawn from, however long the run.
        self._known: dict[str, array] = {}
        self._pool_start = mixture.state_dict()
        self._pool_micro_batch = micro_batch
        self._pool: list[Record] = []
        self._handed = 0

    def next(self) -> Record:
        if self._handed == len(self._pool):
            self._fill_pool(self.micro_batch)
        record = self._pool[self._handed]
        self._handed += 1
        return record

    @property
    def records(self) -> Sources:
        return self.mixture.records

    def __iter__(self) -> LengthGroupedSampler:
        return self

    def __next__(self) -> Record:
        return self.next()

    def state_dict(self) -> dict:
        if self._handed == len(self._pool):  # between pools: the next one starts from the mixture as it is
            return self.mixture.state_dict()
        pool = {"micro_batch": self._pool_micro_batch, "size": len(self._pool), "handed": self._handed}
        return {**self._pool_start, "pool": pool}

    def load_state_dict(self, state: dict) -> None:
        """Also takes a plain mixture state (a checkpoint from before grouping): the next pool starts there."""
        pool = state.get("pool")
        self.mixture.load_state_dict({key: value for key, value in state.items() if key != "pool"})
        self._pool, self._handed = [], 0
        if pool is not None:
            self._fill_pool(pool["micro_batch"])
            if len(self._pool) != pool["size"]:
                raise ValueError(f"the sampler state has a pool of {pool['size']} records, redrawn {len(self._pool)}")
            self._handed = pool["handed"]

    def _fill_pool(self, micro_batch: int) -> None:
        self._pool_start = self.mixture.state_dict()
        self._pool_micro_batch = micro_batch
        drawn = [self.mixture.next_index() for _ in range(POOL_MICRO_BATCHES * micro_batch)]
        batches = self._grouped(drawn, micro_batch)
        random.Random(json.dumps(["pool", self.mixture.seed, self._pool_start["draws"]])).shuffle(batches)
        self._pool = [record for batch in batches for record in batch]
        self._handed = 0

    def _grouped(self, drawn: list[tuple[str, int]], micro_batch: int) -> list[list[Record]]:
        # the pool's records are read once and held (a pool is small); their lengths are remembered by position
        records = [self.records[name][index] for name, index in drawn]
        lengths = [self._lengths_of(key, record) for key, record in zip(drawn, records, strict=True)]
        # sort keys end with the draw index, so ties never depend on anything but the draws
        by_prompt = sorted(range(len(records)), key=lambda i: (lengths[i][0], i))
        slab = SLAB_MICRO_BATCHES * micro_batch
        order: list[int] = []
        for start in range(0, len(by_prompt), slab):
            order += sorted(by_prompt[start : start + slab], key=lambda i: (lengths[i][1], i))
        return [[records[i] for i in order[start : start + micro_batch]] for start in range(0, len(order), micro_batch)]

    def _lengths_of(self, key: tuple[str, int], record: Record) -> tuple[int, int]:
        name, index = key
        if name not in self._known:
            self._known[name] = array("I", bytes(8 * len(self.records[name])))
        known = self._known[name]
        if not known[2 * index]:
            known[2 * index], known[2 * index + 1] = (length + 1 for length in self.lengths(record))
        return known[2 * index] - 1, known[2 * index + 1] - 1


def _check_mixture(records: Sources, weights: dict[str, float]) -> None:
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
