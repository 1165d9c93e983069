"""`MemoryPool`: memories, their vectors and Hebbian state, and soft retrieval over them.

Retrieval is built to be re-run every few generated tokens: candidates come from the
vector index and are widened until the selection over them is proven to be the one that
scoring every memory would give (`exact=True`), pick by pick; only they are scored.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator, Mapping, Optional, Protocol, Sequence, Union

import numpy as np

from smem.memory import scoring, timeref
from smem.memory.embedder import Embedder, embed_documents, embedder_by_name
from smem.memory.index import Scan, VectorIndex
from smem.memory.learning import ENCODING, LEARNED, LearningState, LinkGraph
from smem.memory.lexical import LexicalIndex
from smem.memory.records import Hit, Memory, MemoryFileError, MemoryRecord, Pull, parse_records, validate_record
from smem.memory.scoring import ScoringWeights
from smem.memory.pool_file import check_pool_file
from smem.memory.selection import Candidates, Selection, gumbel_noise, select
from smem.memory.settings import DEFAULTS
from smem.memory.store import PoolFileError, pool_file_bytes, read_pool_file, write_pool_file

Query = Union[str, np.ndarray]
Moment = Union[datetime, float, None]

MIN_CANDIDATES = 64
CANDIDATES_PER_PICK = 4
"""First look: max(4k, 64) nearest for k picks. Chosen, then measured: with 64 the clustered
shapes of docs/benchmarks.md "Retrieval latency" prove in one round at 1k and 100k (median 64
candidates scored, 1.0 selection rounds); LoCoMo-like pools need 1.7–2.2 rounds."""
WIDENING_HEADROOM = 0.99
"""Widen 1% below the similarity the weakest pick needs, so that picks sinking a little
under new neighbours' damping still prove in one more round. At 1.0 the weakest pick only
ties the ceiling of what is left out and never proves; 0.99, 0.995 and 0.999 all proved in
the same rounds as 0.97 on every latency shape (docs/benchmarks.md "A third CPU kind"; 1.93–2.00
at 100k), with 26%, 32% and 37% fewer candidates for 20 broad topics (2,031 / 1,859 / 1,728
against 2,746): 0.99 keeps most of the gain and the most room."""
CEILING_SLACK = 1.0 + 1e-9
"""Float slack on the ceiling of memories left out: bounds and exact scores round like the
scores they cap (1e-9 relative: far above float64 rounding of a few operations, ~1e-15; at
worst a pick needs one more round)."""
MAX_WIDENINGS = 4
"""After this many unproven rounds, score every memory (chosen: the latency bench's worst shape
needs 2.2 rounds on average, docs/benchmarks.md "Retrieval latency"; four keeps a pathological
query from scanning more than a few times before the one full pass)."""
MAX_SPREADS = 16
"""Rounds that only add memories linked to a pick (spreading activation) and select again,
counted apart from the widenings. Chosen so that a query spending them all still costs far less
than the full pass it would end in: 16 selections of ~1,000 candidates (~0.5 ms each at 100k)
against ~35 ms. When they shared the widenings' budget, 4 of 50 queries of a 100k pool whose
memories all share one day (20 broad topics, encoding links) spent it on spreading and scored
every memory (docs/benchmarks.md, "Links at retrieval")."""
LEARNED_EXACT_FRACTION = 8
"""Memories with learned state are bounded one by one while they are ≤ 1/8 of the pool
(an eighth of a float32 pass); beyond, one closed-form bound covers every memory."""

LEXICAL_SAMPLE_STRIDE = 64
"""`_lexical_top` sets its threshold from every 64th BM25 score (chosen: 1,563 scores at 100k,
a 0.01 ms partition; at 1k, 16, where a short fall costs one partition of the nonzero scores)."""

APPROXIMATE_CANDIDATES_PER_PICK = 4
"""The approximate search scores 4× the exact path's first look (256 candidates for k ≤ 16):
a cheap margin against the lists' misses. Chosen; its recall is measured in the latency bench."""

CONTENT_TOKENS = "embedder-content"
"""Key of the counts a pool keeps until a model's counter is given: the embedder's tokens of
each memory's content, an estimate of what the memory costs in a prompt."""


class TokenCounter(Protocol):
    """Counts what each memory costs in the generating model's prompt (see
    `smem.generation.prompt.MemoryLineTokens`). `key` names what is counted (tokenizer and
    rendering): counts made under the same key are reused, never recounted."""

    key: str

    def __call__(self, memories: Sequence[Memory]) -> Sequence[int]: ...


def to_epoch(moment: Moment) -> float:
    if moment is None:
        return time.time()
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return moment.timestamp()
    return float(moment)


def _unit_rows(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"{what} must have shape (n, {dim}), got {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{what} contain an all-zero vector")
    return np.ascontiguousarray(vectors / norms)


class MemoryPool:
    """A pool of memories with Streaming Memory scoring, selection and Hebbian learning.

    Not thread-safe: give each visitor or session its own pool (`copy()` is cheap for
    memory sets of app size) or guard it with a lock.
    """

    def __init__(
        self,
        embedder: Embedder,
        softmax_temperature: float = DEFAULTS.softmax_temperature,
        diversity_weight: float = DEFAULTS.diversity_weight,
        association_weight: float = DEFAULTS.association_weight,
        seed: Optional[int] = None,
        *,
        lexical_weight: float = DEFAULTS.lexical_weight,
        weights: ScoringWeights = ScoringWeights(),
        quantized_threshold: int = DEFAULTS.quantized_threshold,
        token_counter: Optional[TokenCounter] = None,
    ) -> None:
        if softmax_temperature <= 0:
            raise ValueError("softmax_temperature must be > 0")
        if not 0.0 <= diversity_weight <= 1.0:
            raise ValueError("diversity_weight must be within [0, 1]")
        if association_weight < 0:
            raise ValueError("association_weight must be >= 0")
        if not 0.0 <= lexical_weight < 1.0:
            raise ValueError("lexical_weight must be within [0, 1)")
        self._embedder: Optional[Embedder] = embedder
        self.embedder_name = embedder.name
        self.dim = int(embedder.dim)
        self.softmax_temperature = float(softmax_temperature)
        self.diversity_weight = float(diversity_weight)
        self.association_weight = float(association_weight)
        self.lexical_weight = float(lexical_weight)
        self.weights = weights
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._memories: list[Memory] = []
        self._position: dict[str, int] = {}
        self._index = VectorIndex(self.dim, quantized_threshold=quantized_threshold)
        self._lexical = LexicalIndex()
        self._token_counter: Optional[TokenCounter] = token_counter
        self._token_key = token_counter.key if token_counter is not None else CONTENT_TOKENS
        self._tokens = np.zeros(0, dtype=np.int32)  # (N,) prompt tokens of each memory, under _token_key
        self._token_total = 0
        self._created = np.zeros(0, dtype=np.float64)  # (N,) creation time, epoch seconds
        self._emotion = np.zeros(0, dtype=np.float32)  # (N,) emotional_intensity in [0, 1]
        self.learning = LearningState.empty(0, self.dim)  # per-memory counts (N,), query sums (N, D), links

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = embedder_by_name(self.embedder_name)
        return self._embedder

    def __getstate__(self) -> dict[str, Any]:
        # The counter holds a tokenizer; its counts and key travel, and an engine re-attaches it.
        state = self.__dict__.copy()
        state["_embedder"] = None
        state["_token_counter"] = None
        return state

    def __len__(self) -> int:
        return len(self._memories)

    def __iter__(self) -> Iterator[Memory]:
        return iter(self._memories)

    def __contains__(self, memory_id: object) -> bool:
        return memory_id in self._position

    @property
    def memories(self) -> list[Memory]:
        return list(self._memories)

    def get(self, memory_id: str) -> Memory:
        return self._memories[self._position[memory_id]]

    def position(self, memory_id: str) -> int:
        return self._position[memory_id]

    def retrieval_count(self, memory_id: str) -> int:
        return int(self.learning.counts[self._position[memory_id]])

    @property
    def token_counts(self) -> np.ndarray:
        """(N,) what each memory costs in the prompt, in pool order (read-only)."""
        view = self._tokens.view()
        view.flags.writeable = False
        return view

    @property
    def total_tokens(self) -> int:
        """What every memory together costs in the prompt (kept up to date, not summed per call)."""
        return self._token_total

    @property
    def token_key(self) -> str:
        return self._token_key

    def count_tokens_with(self, counter: TokenCounter) -> None:
        """Count memories' prompt tokens with `counter` from now on.

        Memories already counted under `counter.key` keep their counts, so attaching the same
        model's counter to a copy, or to a pool that was pickled, costs nothing; another key
        recounts every memory once (batched).
        """
        self._token_counter = counter
        if counter.key == self._token_key:
            return
        self._set_counts(self._count(self._memories), counter.key)

    def _count(self, memories: Sequence[Memory]) -> np.ndarray:
        if self._token_counter is not None:
            counts = self._token_counter(memories)
        else:
            counts = [self.embedder.count_tokens(memory.content) for memory in memories]
        return np.asarray(counts, dtype=np.int32).reshape(len(memories))

    def _set_counts(self, counts: np.ndarray, key: str) -> None:
        self._memories = [dataclasses.replace(m, tokens=int(n)) for m, n in zip(self._memories, counts)]
        self._tokens = counts
        self._token_total = int(counts.sum())
        self._token_key = key

    def links(self, kind: str = LEARNED) -> list[tuple[str, str, float]]:
        """Links of one kind as (id, id, raw weight), each pair once: "learned" (co-retrieval,
        grown by use) or "encoding" (made when memories dated the same day were added together)."""
        ids = self._memories
        return [(ids[a].id, ids[b].id, w) for a, b, w in self.learning.edges(kind)]

    # -- adding -----------------------------------------------------------------------

    def add(
        self,
        content: str,
        *,
        id: Optional[str] = None,
        type: Optional[str] = None,
        subject: Optional[str] = None,
        emotional_intensity: float = 0.5,  # MemoryRecord's default: the middle of the scale
        created_at: Optional[datetime] = None,
    ) -> Memory:
        record = validate_record(
            {
                "content": content,
                "id": id,
                "type": type,
                "subject": subject,
                "emotional_intensity": emotional_intensity,
                "created_at": created_at,
            }
        )
        return self.add_many([record])[0]

    def add_many(
        self,
        records: Iterable[Union[MemoryRecord, Mapping[str, Any]]],
        embeddings: Optional[np.ndarray] = None,
    ) -> list[Memory]:
        """Validate, embed (batched, disk-cached) and add; all or nothing."""
        parsed = parse_records([r.model_dump() if isinstance(r, MemoryRecord) else r for r in records])
        ids = self._assign_ids(parsed)
        if embeddings is None:
            vectors = embed_documents(self.embedder, [record.content for record in parsed])
        else:
            vectors = embeddings
        vectors = _unit_rows(vectors, self.dim, "embeddings")
        if len(vectors) != len(parsed):
            raise ValueError(f"got {len(vectors)} embeddings for {len(parsed)} records")
        if self._token_counter is None and self._token_key != CONTENT_TOKENS:
            # A pickled pool lost its model's counter: fall back to the estimate for all, so the
            # counts stay of one kind (the next engine recounts them with the model's tokenizer).
            self._set_counts(self._count(self._memories), CONTENT_TOKENS)
        now = time.time()
        uncounted = [
            Memory(
                id=memory_id,
                content=record.content,
                type=record.type.value if record.type else None,
                subject=record.subject,
                emotional_intensity=record.emotional_intensity,
                created_at=record.created_at or datetime.fromtimestamp(now, timezone.utc),
                tokens=0,
            )
            for memory_id, record in zip(ids, parsed)
        ]
        counts = self._count(uncounted)
        added = [dataclasses.replace(m, tokens=int(n)) for m, n in zip(uncounted, counts)]
        start = len(self._memories)
        self._memories.extend(added)
        self._position.update({memory.id: start + offset for offset, memory in enumerate(added)})
        self._index.add(vectors)
        self._lexical.add([memory.content for memory in added])
        self._tokens = np.concatenate([self._tokens, counts])
        self._token_total += int(counts.sum())
        self._created = np.concatenate([self._created, np.array([m.created_at.timestamp() for m in added])])
        self._emotion = np.concatenate(
            [self._emotion, np.array([m.emotional_intensity for m in added], dtype=np.float32)]
        )
        self.learning.grow(len(added))
        self._encode_links(start, [record.created_at for record in parsed])
        return added

    def _encode_links(self, start: int, dated: Sequence[Optional[datetime]]) -> None:
        """Contiguity at encoding: each memory added in one batch is linked to its next
        `encoding_window` neighbours when both carry a date and it is the same UTC day
        (adjacent turns of one conversation session). Strength 1/distance. Undated memories
        get no encoding links: their order in a file says nothing about when they happened."""
        window = self.weights.encoding_window
        if window <= 0 or len(dated) < 2:
            return
        day = np.array([np.nan if d is None else to_epoch(d) // scoring.SECONDS_PER_DAY for d in dated])
        for distance in range(1, min(window, len(dated) - 1) + 1):
            same = day[:-distance] == day[distance:]
            first = np.flatnonzero(same)
            self.learning.encode_links(start + first, start + first + distance, np.full(len(first), 1.0 / distance))

    def _assign_ids(self, records: Sequence[MemoryRecord]) -> list[str]:
        ids: list[str] = []
        taken = set(self._position)
        next_number = len(self._memories)
        for index, record in enumerate(records):
            if record.id is not None:
                if record.id in taken:
                    raise MemoryFileError(f"record {index}, field 'id': id {record.id!r} is already in the pool")
                memory_id = record.id
            else:
                while f"m{next_number}" in taken:
                    next_number += 1
                memory_id = f"m{next_number}"
            taken.add(memory_id)
            ids.append(memory_id)
        return ids

    # -- retrieval ----------------------------------------------------------------------

    def build_index(self) -> Optional[float]:
        """Build the approximate index now rather than on the first large query; seconds taken."""
        return self._index.build()

    def embed_query(self, text: str, device: Optional[str] = None) -> np.ndarray:
        """The query's unit vector; on `device` (an accelerator) where the embedder offers
        `encode_on` (`SentenceTransformerEmbedder` does), else on the embedder's own device."""
        encode_on = getattr(self.embedder, "encode_on", None) if device is not None else None
        if encode_on is not None:
            return encode_on([text], device)[0]
        return self.embedder.encode([text])[0]

    def _query_vector(self, query: Query) -> np.ndarray:
        if isinstance(query, str):
            return self.embed_query(query)
        return _unit_rows(np.asarray(query).reshape(1, -1), self.dim, "the query vector")[0]

    def _boost(
        self, index: np.ndarray, query: np.ndarray, now: float, named: Sequence[tuple[float, float]] = ()
    ) -> np.ndarray:
        """Boost terms that do not depend on other picks (links are added during selection).
        `named` are the time intervals the query text names (see `timeref`).

        Keep `_boost_bound` in step: it must stay above every term added here.
        """
        return self._terms(index, query, now, named)[0]

    def _terms(
        self, index: np.ndarray, query: np.ndarray, now: float, named: Sequence[tuple[float, float]] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """`_boost`'s terms and the habituation factor on the gate (`scoring.habituation`) of the
        memories at `index`, from one gather of their learned rows. The factor is below 1 only
        for memories some query retrieved, since it needs the queries' specificity, and never
        above 1, so the candidate bounds of `_choose` (which leave it out) stay upper bounds."""
        w, state = self.weights, self.learning
        last = state.last_retrieved[index]  # (C,) float64 epoch seconds, NaN if never retrieved
        reference = np.where(np.isnan(last), self._created[index], last)
        boost = w.recency * scoring.recency(now - reference, w.recency_half_life_days)
        boost += w.emotion * self._emotion[index]
        if named and w.time > 0:
            boost += w.time * timeref.inside(self._created[index], list(named))
        habituation = np.ones(len(index))  # (C,) float64
        # Learned terms exist only for memories some query retrieved: gather those rows
        # alone (an exact query over 100k memories would otherwise copy 150 MB of zeros).
        slots = state.query_slot[index]  # (C,) int32 query slot, -1 where no query retrieved the memory
        known = np.flatnonzero(slots >= 0)  # (K,) positions into `index`
        if len(known):
            rows, slots = index[known], slots[known]  # (K,) pool positions, (K,) their slots
            specificity, norms = state.query_stats(slots)  # (K,) float64, (K,) float32 |query sum|
            counts = state.query_count[slots]  # (K,) float32 summed query weights
            confidence = counts / (counts + w.confidence_queries)
            learned = w.frequency * scoring.frequency(state.counts[rows], state.mean_active_count())
            if len(slots) == state.slots_used:
                # Every memory a query reached is here (a pass over all memories): the used
                # block of query sums is scanned in place, not gathered row by row first.
                dots = scoring.dot_rows(state.query_sum[: state.slots_used], query)[slots]
            else:
                dots = scoring.dot_rows(state.query_sum[slots], query)
            alignment = scoring.query_alignment(dots, norms, w.association_threshold)
            learned += self.association_weight * confidence * alignment
            boost[known] += specificity * learned
            if w.habituation > 0:
                habituation[known] = scoring.habituation(
                    state.counts[rows].astype(np.float64), specificity, state.mean_active_count(), w.habituation
                )
        return boost, habituation

    def _boost_bound(self, named: Sequence[tuple[float, float]], *, learned: bool) -> float:
        """An upper bound on `_boost` of any memory; with `learned=False`, of any memory
        outside `learned_positions()`. Links are not included: see `_choose`.

        Each term at its largest: recency ≤ 1, emotion ≤ the pool's largest, the time match
        ≤ 1; specificity, confidence and query alignment ≤ 1 and frequency at the largest
        count, these only for memories some retrieval touched. O(N) maxima, a fraction of
        a millisecond at 1M; a fresh pool's multiplier bound is 1 + tanh(0.12) ≈ 1.12, not 2.
        """
        w, state = self.weights, self.learning
        bound = max(w.recency, 0.0) + max(w.emotion, 0.0) * float(self._emotion.max())
        if named:
            bound += max(w.time, 0.0)
        if learned and state.slots_used:
            frequency = float(scoring.frequency(state.counts.max(keepdims=True), state.mean_active_count())[0])
            bound += max(max(w.frequency, 0.0) * frequency + max(self.association_weight, 0.0), 0.0)
        return bound

    def _similarity(self, index: np.ndarray, cosine: np.ndarray, lexical: Optional[np.ndarray]) -> np.ndarray:
        """(C,) float64 hybrid similarity of the memories at `index` (C,), from their cosines (C,)
        and the whole pool's normalised BM25 scores (N,), if the query has text."""
        if lexical is None:
            return cosine.astype(np.float64)
        weight = self.lexical_weight
        return (1.0 - weight) * cosine + weight * lexical[index]

    def _score_everything(
        self, scan: Scan, lexical: Optional[np.ndarray], named: Sequence[tuple[float, float]], now: float
    ) -> "_Scores":
        """Every memory's similarity, boost terms and undamped score, for a scan that already
        computed every cosine (an unquantised pool): one vectorised pass over N, against the
        one or two rounds of candidate scoring it replaces (each a dozen numpy calls)."""
        everything = np.arange(len(self))
        boost, habituation = self._terms(everything, scan.query, now, named)
        similarity = self._similarity(everything, scan.exact_cosines(), lexical)
        # The ranked score `select` gives a memory before damping, favour and links, in its
        # order of operations: (gate × habituation) × multiplier. Damping (≤ 1) only lowers it.
        reach = scoring.gate(similarity.astype(np.float64)) * habituation * scoring.multiplier(boost)
        return _Scores(similarity=similarity, boost=boost, habituation=habituation, reach=reach)

    def _select(self, index: np.ndarray, query: "_Query", *, ceiling: float) -> Selection:
        """Score the candidates at `index` (sorted pool positions) and select among them."""
        everything = len(index) == len(self)
        scan = query.scan
        if query.scores is not None:
            vectors = self._index.vectors if everything else self._index.vectors[index]
            scores = query.scores
            similarity, boost, habituation = (
                (scores.similarity, scores.boost, scores.habituation)
                if everything
                else (scores.similarity[index], scores.boost[index], scores.habituation[index])
            )
        else:
            boost, habituation = self._terms(index, scan.query, query.now, query.named)
            if everything:
                vectors, cosines = self._index.vectors, scan.exact_cosines()
            else:
                vectors, cosines = scan.gathered(index)
            similarity = self._similarity(index, cosines, query.lexical)
        candidates = Candidates(
            index=index,
            vectors=vectors,
            similarity=similarity,
            boost=boost,
            tokens=self._tokens[index],
            favour=(
                np.where(np.isin(index, query.favoured), 1.0 + query.margin, 1.0)
                if len(query.favoured)
                else np.ones(len(index))
            ),
            habituation=habituation,
        )
        return select(
            candidates,
            max_memories=query.max_memories,
            token_budget=query.token_budget,
            links=query.graph.row if query.graph is not None else None,
            link_weight=self.weights.links,
            diversity_weight=self.diversity_weight,
            temperature=self.softmax_temperature,
            noise=self._noise(index, query.sample_seed) if query.sample else None,
            ceiling=0.0 if everything else ceiling,
            fewest_outside_tokens=int(self._tokens.min()),
        )

    def _select_all(self, query: "_Query") -> tuple[np.ndarray, Selection]:
        """Selection over every memory (what the fast path must equal)."""
        everything = np.arange(len(self))
        return everything, self._select(everything, query, ceiling=0.0)

    def _noise(self, index: np.ndarray, seed: Optional[int]) -> np.ndarray:
        """Gumbel noise for the candidates at pool positions `index`."""
        if seed is None:
            return self._rng.gumbel(size=len(index))
        return gumbel_noise(seed, index)

    def _choose(self, query: "_Query", exact: bool) -> tuple[np.ndarray, Selection]:
        """Select over the nearest candidates, widened until the selection is proven to be
        the one scoring every memory gives (`exact`), or over every memory.

        A memory left out has cosine ≤ the scan's bound and BM25 ≤ the lexical cut. Links
        are settled first: the memories linked to any pick join the candidates (spreading
        activation) until no pick links outside, so a memory left out is never lent a link
        and its ranked score is ≤ gate(similarity bound) × (1 + tanh(boost bound)); favour
        and damping only lower it, and incumbents are always candidates. Memories with
        learned state are bounded one by one (`_LearnedReach`), the rest share the closed-form
        bound. A softmax draw weighs every memory, so sampling scores them all.
        """
        size = len(self)
        if exact or query.sample:
            return self._select_all(query)
        if query.scores is not None:
            return self._choose_by_reach(query)
        scan, lexical, named = query.scan, query.lexical, query.named
        count = max(CANDIDATES_PER_PICK * query.max_memories, MIN_CANDIDATES)
        found, bound = scan.top(count)  # (≥count,) pool positions; cosine of all others ≤ bound
        learned = self.learning.learned_positions()
        learned_multiplier = float(scoring.multiplier(np.array([self._boost_bound(named, learned=True)]))[0])
        if len(learned) <= size // LEARNED_EXACT_FRACTION:
            multiplier = float(scoring.multiplier(np.array([self._boost_bound(named, learned=False)]))[0])
        else:
            multiplier = learned_multiplier
            learned = np.zeros(0, dtype=np.int64)
        learned, cosines = scan.cosine_bounds(learned)  # the same positions, in the order of their bounds
        reach = _LearnedReach(self, query, learned, self._similarity(learned, cosines, lexical), learned_multiplier)
        if lexical is not None:
            lexical_bound = 0.0  # normalised BM25 ≥ 0, so this bounds every memory when all are found
            if count < size:
                lexical_top, lexical_bound = _lexical_top(lexical, count)
                found = np.concatenate([found, lexical_top])
            bound = (1.0 - self.lexical_weight) * bound + self.lexical_weight * lexical_bound
        joined = query.favoured
        index = _union(found, joined)
        rounds = _Rounds()
        while len(index) < size:
            # `bound`: the hybrid similarity of every memory left out is at most this.
            ceiling = float(scoring.gate(np.array([bound]))[0]) * multiplier
            left = reach.above(ceiling)[~scoring.sorted_lookup(index, learned)[1]]
            if len(left):
                ceiling = max(ceiling, float(left.max()))
            selection = self._select(index, query, ceiling=ceiling * CEILING_SLACK)
            linked = self._spread(query, index, selection)
            joined = _union(joined, linked)
            if selection.proven:
                if not len(linked):
                    return index, selection
                if not rounds.spread():
                    break
                index = _union(index, linked)
                continue
            # Unproven: they join the widened candidates below, with no round of their own.
            if not rounds.widen():
                break
            # Everything whose score could reach the weakest pick, with headroom.
            target = np.sqrt(selection.weakest / multiplier) * WIDENING_HEADROOM
            if target <= 0.0:
                break
            if lexical is None:
                found, bound = scan.above(target)
            else:
                found, bound = self._hybrid_above(scan, lexical, target)
            # Scored whatever their similarity: incumbents, memories linked to a pick, and
            # memories with learned state whose own ceiling reaches the weakest pick.
            level = selection.weakest * WIDENING_HEADROOM**2
            kept = _union(learned[reach.above(level) >= level], joined)
            index = _union(found, kept)
            # The bound lets in every memory that *may* pass it: for broad topics about half
            # only through the 8-bit codes' margin. Their exact similarity says which do; the
            # others are no better than the bound already says of every memory left out, so
            # they stay out and the round scores half as many (docs/benchmarks.md, "Pruning by
            # exact similarity").
            rows, cosines = scan.gathered(index)
            keep = self._similarity(index, cosines, lexical) > bound
            keep[np.searchsorted(index, kept)] = True
            index = index[keep]
            scan.remember(index, rows[keep], cosines[keep])
        return self._select_all(query)

    def _hybrid_above(self, scan: Scan, lexical: np.ndarray, target: float) -> tuple[np.ndarray, float]:
        """Every pool position whose hybrid similarity may exceed `target`, and `target` (no
        other's does), from a bound per memory: (1 − w)·(its cosine bound) + w·(its BM25).

        A cut on each part alone (cosine > target, or BM25 > target) also holds, but it keeps
        memories that only one part favours: a LoCoMo question's BM25 picks out thousands of
        turns that share a word with it and are far in meaning; with the joint bound the
        100k LoCoMo text shape scores ~5× fewer candidates (docs/benchmarks.md "Retrieval
        latency")."""
        weight = self.lexical_weight
        positions, upper, rest = scan.bounds(target)
        found = positions[(1.0 - weight) * upper + weight * lexical[positions] > target]
        # Memories the scan did not return have cosine ≤ `rest`: only BM25 can lift them
        # (a query has BM25 scores only when the weight is > 0, `retrieve`).
        found = np.concatenate([found, np.flatnonzero(lexical > (target - (1.0 - weight) * rest) / weight)])
        return found, target

    def _choose_by_reach(self, query: "_Query") -> tuple[np.ndarray, Selection]:
        """`_choose` where every memory's undamped score is already known (`_Scores.reach`):
        the ceiling on a memory left out is then the largest of theirs, not a bound, so the
        nearest few by score settle the selection in one round far more often (1.8 rounds a
        LoCoMo query at 1k with the similarity bound, docs/benchmarks.md "1k overhead")."""
        reach = query.scores.reach
        size = len(reach)
        count = max(CANDIDATES_PER_PICK * query.max_memories, MIN_CANDIDATES)
        found = np.argpartition(-reach, count)[:count] if count < size else np.arange(size)
        joined = query.favoured
        outside = np.empty(size, dtype=bool)  # (N,) left out of this round's candidates
        rounds = _Rounds()
        while True:
            index = _union(found, joined)
            if len(index) == size:
                break
            outside.fill(True)
            outside[index] = False
            selection = self._select(index, query, ceiling=float(reach[outside].max()) * CEILING_SLACK)
            linked = self._spread(query, index, selection)  # as in `_choose`
            joined = _union(joined, linked)
            if selection.proven:
                if not len(linked):
                    return index, selection
                if not rounds.spread():
                    break
                continue
            if not rounds.widen():
                break
            target = selection.weakest * WIDENING_HEADROOM**2
            if target <= 0.0:
                break
            found = np.flatnonzero(reach >= target)
        return self._select_all(query)

    def _spread(self, query: "_Query", index: np.ndarray, selection: Selection) -> np.ndarray:
        """Spreading activation: the memories outside `index` linked to a pick that must join
        the candidates before the selection can be proven, with their own neighbours (once
        picked, they lend in turn: joining those too saved most third rounds). While the
        selection is short of `max_memories` every linked memory must (it would go on to take a
        left-out memory that fits); once full, only those whose lent ceiling reaches the
        weakest pick.

        A memory left out is lent by each pick it is linked to, and lending only grows as picks
        are added, so its ranked score at any step is at most gate × habituation ×
        multiplier(boost + what every pick lends it at once); favour is 1 (incumbents are
        always candidates) and damping ≤ 1. Below the weakest pick it was never the argmax,
        and the selection stands without it. Its similarity and boost are computed exactly:
        it is one of a few neighbours of ≤ k picks. Joining every neighbour instead cost a
        dated 100k pool 3.8 selections a query (docs/benchmarks.md, "Links at retrieval")."""
        neighbours, weights = _pick_edges(query, index, selection)  # (P,), (P,)
        linked = _linked_outside(index, neighbours, weights)
        if not len(linked) or len(selection.picks) < query.max_memories:
            return linked
        at, hit = scoring.sorted_lookup(linked, neighbours)
        lent = np.zeros(len(linked))  # (L,) summed weight every pick lends each linked memory
        np.add.at(lent, at[hit], weights[hit])
        if query.scores is not None:
            similarity, boost, habituation = (
                query.scores.similarity[linked], query.scores.boost[linked], query.scores.habituation[linked]
            )
        else:
            boost, habituation = self._terms(linked, query.scan.query, query.now, query.named)
            similarity = self._similarity(linked, query.scan.cosines(linked), query.lexical)
        gate = scoring.gate(similarity.astype(np.float64)) * habituation
        ceiling = gate * scoring.multiplier(boost + self.weights.links * scoring.link_strength(lent))
        reached = linked[ceiling * CEILING_SLACK >= selection.weakest]
        if not len(reached):
            return reached
        return np.setdiff1d(_union(reached, query.graph.neighbours(reached)), index)

    def _choose_approximately(self, query: "_Query") -> tuple[np.ndarray, Selection]:
        """Select over the approximate nearest candidates (`Scan.nearest`, and BM25's best for
        a text query), the memories with learned state while they are few (a learned boost
        can lift one that is not among the nearest), the incumbents, and the memories linked
        to the picks (spreading, as in `_choose`); nothing is proven about the memories left out."""
        count = APPROXIMATE_CANDIDATES_PER_PICK * max(CANDIDATES_PER_PICK * query.max_memories, MIN_CANDIDATES)
        found = query.scan.nearest(count)
        learned = self.learning.learned_positions()
        if len(learned) <= len(self) // LEARNED_EXACT_FRACTION:
            found = np.concatenate([found, learned])
        if query.lexical is not None and count < len(self):
            found = np.concatenate([found, _lexical_top(query.lexical, count)[0]])
        joined = query.favoured
        for _ in range(1 + MAX_SPREADS):
            index = _union(found, joined)
            selection = self._select(index, query, ceiling=0.0)
            linked = _linked_outside(index, *_pick_edges(query, index, selection))
            if not len(linked):
                break
            joined = _union(joined, linked)
        return index, selection

    def retrieve(
        self,
        query: Query,
        max_memories: int = 5,  # the app's context size (the engine's default)
        token_budget: Optional[int] = None,
        now: Moment = None,
        sample: bool = False,
        learn: bool = True,
        *,
        incumbents: Collection[str] = (),
        incumbent_margin: float = 0.0,
        exact: bool = False,
        query_vector: Optional[np.ndarray] = None,
        sample_seed: Optional[int] = None,
        approximate: bool = False,
    ) -> list[Hit]:
        """Select up to `max_memories` for `query` (text or a vector).

        A text query is matched by the hybrid similarity (cosine mixed with BM25); a bare
        vector by cosine alone. `query_vector` is the text's embedding, if already known.

        `incumbents` (ids now in context) have their score raised by `incumbent_margin`,
        so a streaming answer does not swap memories on a near-tie. `exact` scores every
        memory; the fast path is proven to select the same memories with the same scores
        (tests/test_retrieval_exact.py). `sample` always scores every memory and draws from the
        softmax (Gumbel-max); with `sample_seed` the noise is fixed per (seed, memory), so a
        streaming answer's re-retrievals are reproducible and change the set only where the
        scores moved; without it the pool's own random stream rolls fresh noise.

        `approximate` (off by default) is explicitly *approximate*: on a quantised pool the
        candidates come from an inverted-file search over a few topic lists, scored exactly
        but with no proof that a memory outside them would not have been chosen. Its recall
        against exact scoring is measured in docs/benchmarks.md ("Retrieval latency"); use it
        only where the exact path misses a latency budget. `exact` and `sample` win over it,
        and a pool below `quantized_threshold` takes the exact fast path anyway.
        """
        if max_memories < 0:
            raise ValueError("max_memories must be >= 0")
        if token_budget is not None and token_budget < 0:
            raise ValueError("token_budget must be >= 0")
        if incumbent_margin < 0:
            raise ValueError("incumbent_margin must be >= 0")
        if not len(self) or max_memories == 0:
            return []
        if query_vector is not None:
            vector = self._query_vector(query_vector)
        else:
            vector = self._query_vector(query)
        lexical = None
        if isinstance(query, str) and self.lexical_weight > 0:
            lexical = self._lexical.scores(query)
        moment = to_epoch(now)
        scan = self._index.scan(vector)
        named = timeref.named_intervals(query) if isinstance(query, str) else []
        asked = _Query(
            scan=scan,
            lexical=lexical,
            named=named,
            scores=self._score_everything(scan, lexical, named, moment) if scan.complete else None,
            now=moment,
            favoured=(
                np.unique(np.asarray([self._position[i] for i in incumbents if i in self._position], dtype=np.int64))
                if incumbents
                else _NONE
            ),
            margin=incumbent_margin,
            graph=self._link_graph(),
            sample=sample,
            sample_seed=sample_seed,
            max_memories=max_memories,
            token_budget=token_budget,
        )
        if approximate and not exact and not sample and self._index.quantized:
            index, selection = self._choose_approximately(asked)
        else:
            index, selection = self._choose(asked, exact)
        picks = selection.picks
        positions = np.array([int(index[pick.position]) for pick in picks], dtype=np.int64)
        pulls = self._pulls(asked.graph, positions) if asked.graph is not None else [()] * len(picks)
        hits = [
            Hit(
                memory=self._memories[position],
                score=pick.score,
                similarity=pick.similarity,
                multiplier=pick.multiplier,
                rank=rank,
                pulled_by=pulled,
            )
            for rank, (position, pick, pulled) in enumerate(zip(positions.tolist(), picks, pulls))
        ]
        if learn and hits:
            top = max(pick.score for pick in picks)
            self.learning.reinforce(
                positions,
                query=vector,
                now=moment,
                activity=[pick.score / top if top > 0 else 0.0 for pick in picks],
            )
        return hits

    def _link_graph(self) -> Optional[LinkGraph]:
        """Encoding + learned links, or None while the pool has none (then retrieval skips
        spreading entirely, as in a fresh 1M-memory pool)."""
        return self.learning.graph(self.weights.learned_links)

    def _pulls(self, graph: LinkGraph, positions: np.ndarray) -> list[tuple[Pull, ...]]:
        """For each pick (in pick order), the earlier picks whose links lent it multiplier."""
        pulls: list[list[Pull]] = [[] for _ in positions]
        for kind in (ENCODING, LEARNED):
            weights = np.triu(graph.block(positions, kind), 1)  # earlier pick (row) → later pick (column)
            for earlier, later in zip(*np.nonzero(weights)):
                pulls[later].append(Pull(self._memories[int(positions[earlier])].id, kind, float(weights[earlier, later])))
        return [tuple(sorted(found, key=lambda pull: -pull.weight)) for found in pulls]

    # -- learning -----------------------------------------------------------------------

    def reinforce(
        self,
        ids: Sequence[str],
        query: Optional[Query] = None,
        now: Moment = None,
        link_strength: float = 1.0,
        count: bool = True,
        activity: Optional[Sequence[float]] = None,
    ) -> None:
        """One Hebbian event for memories that were in context together.

        Used by the streaming engine, which retrieves with `learn=False` while it generates
        and learns once per response.
        """
        unknown = [memory_id for memory_id in ids if memory_id not in self._position]
        if unknown:
            # The first five are enough to find the mistake (chosen).
            raise KeyError(f"unknown memory id(s): {', '.join(map(repr, unknown[:5]))}")
        vector = None if query is None else self._query_vector(query)
        self.learning.reinforce(
            [self._position[i] for i in ids],
            query=vector,
            now=to_epoch(now),
            activity=activity,
            link_strength=link_strength,
            count=count,
        )

    def learning_state(self) -> LearningState:
        return self.learning.copy()

    def set_learning_state(self, state: LearningState) -> None:
        if len(state) != len(self):
            raise ValueError(f"learning state covers {len(state)} memories, the pool has {len(self)}")
        if state.query_sum.shape[1] != self.dim:
            raise ValueError(f"learning state has query vectors of dim {state.query_sum.shape[1]}, the pool {self.dim}")
        self.learning = state.copy()

    def reset_learning(self) -> None:
        self.learning = LearningState.empty(len(self), self.dim)

    def copy(self) -> "MemoryPool":
        """An independent pool sharing only the (read-only) embedder."""
        clone = MemoryPool.__new__(MemoryPool)
        clone.__dict__.update(self.__dict__)
        clone._memories = list(self._memories)
        clone._position = dict(self._position)
        clone._index = VectorIndex(self.dim, quantized_threshold=self._index.quantized_threshold)
        clone._index.add(self._index.vectors)
        clone._lexical = self._lexical.copy()
        clone._tokens = self._tokens.copy()
        clone._created = self._created.copy()
        clone._emotion = self._emotion.copy()
        clone.learning = self.learning.copy()
        clone._rng = np.random.default_rng(self.seed)
        return clone

    # -- persistence --------------------------------------------------------------------

    def _file_parts(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"vectors": self._index.vectors, **self.learning.to_arrays()}
        meta = {
            "embedder": self.embedder_name,
            "dim": self.dim,
            "params": {
                "softmax_temperature": self.softmax_temperature,
                "diversity_weight": self.diversity_weight,
                "association_weight": self.association_weight,
                "lexical_weight": self.lexical_weight,
                "seed": self.seed,
                "quantized_threshold": self._index.quantized_threshold,
                "weights": self.weights.__dict__,
            },
            "updates": self.learning.updates,
            "answers": self.learning.answers,
            "total_count": self.learning.total_count,
            "token_key": self._token_key,
            "memories": [{**memory.to_record(), "tokens": memory.tokens} for memory in self._memories],
        }
        return arrays, meta

    def save(self, path: Union[str, Path]) -> None:
        """Everything — memories, vectors with the embedder's name, Hebbian state — atomically."""
        write_pool_file(path, *self._file_parts())

    def to_bytes(self) -> bytes:
        """The content `save` writes, for a download or a database row."""
        return pool_file_bytes(*self._file_parts())

    @classmethod
    def load(cls, source: Union[str, Path, bytes], embedder: Embedder) -> "MemoryPool":
        """A pool from a file `save` wrote (a path, or its bytes). Every array and field is
        checked first: an inconsistent file raises `PoolFileError` naming the field, never a
        crash or a NaN score later at retrieve time."""
        name = "the pool file" if isinstance(source, bytes) else Path(source).name
        arrays, meta = read_pool_file(source)
        if meta.get("embedder") != embedder.name or meta.get("dim") != embedder.dim:
            raise PoolFileError(
                f"{name} was embedded with {meta.get('embedder')!r} (dim {meta.get('dim')}); "
                f"the embedder given is {embedder.name!r} (dim {embedder.dim})"
            )
        records, params, weights = check_pool_file(arrays, meta, int(embedder.dim), name)
        try:
            pool = cls(embedder, **params, weights=weights)
        except (TypeError, ValueError) as exc:
            raise PoolFileError(f"{name}: field 'params': {exc}") from None
        pool._restore(records, arrays["vectors"])
        pool._token_key = str(meta.get("token_key", CONTENT_TOKENS))
        # "events" is what files saved before the updates/answers split called updates.
        updates = int(meta.get("updates", meta.get("events", 0)))
        pool.learning = LearningState.from_arrays(
            arrays, updates, int(meta.get("answers", 0)), total_count=meta.get("total_count")
        )
        return pool

    def _restore(self, records: list[dict[str, Any]], vectors: np.ndarray) -> None:
        self._memories = [
            Memory(
                id=r["id"],
                content=r["content"],
                type=r["type"],
                subject=r["subject"],
                emotional_intensity=float(r["emotional_intensity"]),
                created_at=datetime.fromisoformat(r["created_at"]),
                tokens=int(r["tokens"]),
            )
            for r in records
        ]
        self._position = {memory.id: i for i, memory in enumerate(self._memories)}
        self._index.add(vectors)
        self._lexical.add([memory.content for memory in self._memories])
        self._tokens = np.array([m.tokens for m in self._memories], dtype=np.int32)
        self._token_total = int(self._tokens.sum())
        self._created = np.array([m.created_at.timestamp() for m in self._memories])
        self._emotion = np.array([m.emotional_intensity for m in self._memories], dtype=np.float32)


@dataclass(frozen=True)
class _Query:
    """One retrieval's inputs, as the candidate rounds share them."""

    scan: Scan
    lexical: Optional[np.ndarray]
    """(N,) normalised BM25 score of every memory, or None for a vector-only query."""
    named: Sequence[tuple[float, float]]
    scores: Optional["_Scores"]
    """Every memory's scoring inputs, where the scan knows every cosine; else None (scored per round)."""
    now: float
    favoured: np.ndarray
    """Incumbents' pool positions (sorted)."""
    margin: float
    graph: Optional[LinkGraph]
    """Encoding + learned links, or None while the pool has none."""
    sample: bool
    sample_seed: Optional[int]
    max_memories: int
    token_budget: Optional[int]


@dataclass(frozen=True)
class _Scores:
    """Every memory's inputs to `select` for one query, as (N,) arrays in pool order."""

    similarity: np.ndarray
    boost: np.ndarray
    habituation: np.ndarray
    reach: np.ndarray
    """Undamped ranked score (float64): what a memory left out of the candidates could reach."""


_NONE = np.zeros(0, dtype=np.int64)
_NONE.flags.writeable = False


class _Rounds:
    """What a fast-path selection may still spend before it scores every memory: rounds that
    only add memories a pick's links reach (`MAX_SPREADS`) and widenings (`MAX_WIDENINGS`),
    counted apart."""

    def __init__(self) -> None:
        self._spreads = self._widenings = 0

    def spread(self) -> bool:
        """Count a link round; False once past the budget."""
        self._spreads += 1
        return self._spreads <= MAX_SPREADS

    def widen(self) -> bool:
        """Count an unproven round; False at the last one (its widening would go unscored)."""
        self._widenings += 1
        return self._widenings < MAX_WIDENINGS


class _LearnedReach:
    """Ceilings on the ranked score of the memories with learned state, (L,) for `learned` (L,),
    tightened only where they matter.

    Each starts from bounds that read no row: the scan's bound on the memory's cosine
    (`Scan.cosine_bounds`, from its code) and the pool-wide bound on a learned memory's boost
    (`multiplier`). `above(level)` replaces every ceiling at or above `level` by the one with
    the exact boost (its past queries' sum read), which can only lower it; ceilings below a
    level stay below it. So whatever `_choose` asks of them (the largest ceiling left out, the
    memories that may reach the weakest pick) comes out as exact boosts would give it, while a
    pool in use reads the query sums of the few memories near a level instead of all of them
    (docs/benchmarks.md, "A pool in use" and "Learned memories watched")."""

    def __init__(
        self, pool: MemoryPool, query: "_Query", learned: np.ndarray, similarity: np.ndarray, multiplier: float
    ) -> None:
        self._exact = lambda rows: pool._boost(learned[rows], query.scan.query, query.now, query.named)
        self._gate = scoring.gate(similarity)
        self._values = self._gate * multiplier
        self._tight = np.zeros(len(learned), dtype=bool)

    def above(self, level: float) -> np.ndarray:
        """The ceilings, each one at or above `level` computed with the exact boost."""
        loose = np.flatnonzero(~self._tight & (self._values >= level))
        if 2 * len(loose) > len(self._values):
            # Past half, all of them: the past queries' sums of every memory with learned state
            # are read in place (`_terms`), where a subset is copied row by row first and then
            # read again, at least twice the cost per row.
            loose = np.arange(len(self._values))
        if len(loose):
            self._values[loose] = self._gate[loose] * scoring.multiplier(self._exact(loose))
            self._tight[loose] = True
        return self._values


def _lexical_top(lexical: np.ndarray, count: int) -> tuple[np.ndarray, float]:
    """The `count` best (N,) normalised BM25 scores' positions, and the next best score (≥ 0):
    no other memory scores above it.

    BM25 scores tie heavily (every turn that shares just a speaker's name scores the same),
    and `np.argpartition` over all of them took 0.78 ms at 100k LoCoMo text queries. A
    threshold from a strided sample, set so that about 4 × (count + 1) scores pass, leaves a
    few hundred to partition: 0.08 ms, the same positions' bound (measured on the AVX-512
    EPYC). When fewer than count + 1 pass, the nonzero scores are partitioned instead."""
    sample = lexical[::LEXICAL_SAMPLE_STRIDE]
    rank = len(sample) - 1 - min(4 * (count + 1) // LEXICAL_SAMPLE_STRIDE, len(sample) - 1)
    threshold = float(np.partition(sample, rank)[rank])
    scored = np.flatnonzero(lexical >= threshold) if threshold > 0 else np.zeros(0, dtype=np.int64)
    if len(scored) <= count:
        scored = np.flatnonzero(lexical > 0)
        if len(scored) <= count:
            return scored, 0.0
    part = np.argpartition(-lexical[scored], count)
    return scored[part[:count]], max(float(lexical[scored[part[count]]]), 0.0)


def _union(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """`np.union1d` (sorted, unique) by one sort: numpy 2.4's `unique` hashes first, 34 against
    134 µs for a widening round's 2,000 positions (measured on the AVX-512 EPYC)."""
    merged = np.sort(np.concatenate([first, second]))
    if len(merged) < 2:
        return merged
    return merged[np.concatenate(([True], merged[1:] != merged[:-1]))]


def _pick_edges(query: _Query, index: np.ndarray, selection: Selection) -> tuple[np.ndarray, np.ndarray]:
    """(linked pool position, weight) of every link from a pick (`LinkGraph.edges`); none while
    the pool has no links or nothing was picked."""
    if query.graph is None or not selection.picks:
        return _NONE, np.zeros(0)
    return query.graph.edges(index[[pick.position for pick in selection.picks]])


def _linked_outside(index: np.ndarray, neighbours: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pool positions outside `index` that links of weight > 0 reach (sorted, unique)."""
    return np.setdiff1d(neighbours[weights > 0], index)
