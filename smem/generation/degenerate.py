"""Is an answer degenerate? Copied instructions or headings, a repeated sentence, a looping span.

These are the failures seen on the small local model (issue 10): answers that began by echoing
the prompt's memory heading, looped "I'm sorry, but I can't help with that either" six times, or
said the same sentence five times. The answer benchmark reports the share of answers this flags
(`degenerate_rate`), a test fails the default model on any flagged answer, and the default
model's decoding will not end a sentence twice (`decoding.NoRepeatedSentence`), so all three use
this one definition. One more failure is defined here for the decoder alone: an answer that
ends on a restatement of the request (`restated_ending`).

Tokens here are words and single punctuation marks (as LoCoMo's SimpleTokenizer splits: runs of
word characters, else one non-space character), so the rule does not depend on a model's
tokenizer and reads the same for every candidate model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional

import re

REPEAT_SPAN = 12
"""A span of this many tokens written twice is a loop (the issue's definition)."""

COPY_SPAN = 6
"""An instruction or heading counts as copied when this many consecutive words of it reappear
in the answer (or all of it, for a shorter one). Six words is past what a natural answer shares
with a sentence of the prompt by chance ("use them where they help" is already five)."""

MIN_COPY_WORDS = 3
"""Headings shorter than this ("Notes:") are ordinary words and are not checked."""

MIN_SENTENCE_WORDS = 3
"""A repeated sentence must have at least this many words: "Yes." twice is not a loop."""

RESTATED_WORDS = 8
"""An answer whose last sentence ends on this many consecutive words of the user's message has
restated the request instead of answering it. Where it came from (docs/benchmarks.md, "An answer
may not end on the question"): the endings that only restated the message ended on 8 to 13 of
its words ("Yes, I can pull together everyone's holiday gift ideas, including something for my
mom."; LoCoMo's "When Gina has lost her job at Door Dash?" answered "Gina has lost her job at
Door Dash."), every ending that answered on at most 7 ("John felt a sense of joy and excitement
during the small party with the veterans."), over 60 example answers and 420 LoCoMo answers of
the packaged 0.5B."""

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


@dataclass(frozen=True)
class Verdict:
    """Why an answer is degenerate; falsy when it is not."""

    copied: Optional[str] = None
    """The instruction or heading the answer copies."""
    repeated_sentence: Optional[str] = None
    repeated_span: Optional[str] = None

    def __bool__(self) -> bool:
        return any((self.copied, self.repeated_sentence, self.repeated_span))

    @property
    def reasons(self) -> list[str]:
        found = {"copied": self.copied, "repeated sentence": self.repeated_sentence, "repeated span": self.repeated_span}
        return [f"{name}: {value!r}" for name, value in found.items() if value]


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _ngrams(items: list[str], n: int) -> Iterable[tuple[str, ...]]:
    return zip(*(items[i:] for i in range(n)))


def copied_instruction(answer: str, instructions: Iterable[str]) -> Optional[str]:
    """The first line of `instructions` (system prompt, memory heading, any fixed prompt text)
    of which `COPY_SPAN` consecutive words (all of it, if shorter) appear in `answer`."""
    answer_words = _words(answer)
    for instruction in instructions:
        for line in instruction.splitlines():
            words = _words(line)
            if len(words) < MIN_COPY_WORDS:
                continue
            n = min(COPY_SPAN, len(words))
            if set(_ngrams(words, n)) & set(_ngrams(answer_words, n)):
                return line.strip()
    return None


def sentences(text: str) -> list[str]:
    """`text` cut into sentences: after . ! ? and whitespace, and at every newline (a list item
    is a sentence). The last one may still be being written."""
    return _SENTENCE_END.split(text)


def sentence_words(sentence: str) -> Optional[tuple[str, ...]]:
    """What makes two sentences one sentence written twice: the same words, lower-cased.
    None for a sentence too short to count (`MIN_SENTENCE_WORDS`)."""
    words = tuple(_words(sentence))
    return words if len(words) >= MIN_SENTENCE_WORDS else None


def restated_ending(answer: str, message: str) -> Optional[str]:
    """The answer's last sentence (ignoring blank lines after it) when it ends on
    `RESTATED_WORDS` consecutive words of `message`, else None. Not a degenerate answer by the
    issue's definition (`degenerate` does not count it), but no answer either: the decoder will
    not end an answer there (`decoding.NoRestatedEnding`)."""
    written = [sentence for sentence in sentences(answer) if _WORD.search(sentence)]
    if not written:
        return None
    tail = _words(written[-1])[-RESTATED_WORDS:]
    if len(tail) < RESTATED_WORDS:
        return None
    return written[-1].strip() if f" {' '.join(tail)} " in f" {' '.join(_words(message))} " else None


def repeated_sentence(answer: str) -> Optional[str]:
    """A sentence (of `MIN_SENTENCE_WORDS` or more words) written twice, compared by its words."""
    seen: set[tuple[str, ...]] = set()
    for sentence in sentences(answer):
        words = sentence_words(sentence)
        if words is None:
            continue
        if words in seen:
            return sentence.strip()
        seen.add(words)
    return None


def repeated_span(answer: str, span: int = REPEAT_SPAN) -> Optional[str]:
    """A run of `span` tokens that occurs twice (overlapping occurrences count: a token looping
    on itself is the worst loop of all)."""
    tokens = [t.lower() for t in _TOKEN.findall(answer)]
    counts = Counter(_ngrams(tokens, span))
    for gram, count in counts.items():
        if count > 1:
            return " ".join(gram)
    return None


def degenerate(answer: str, instructions: Iterable[str] = ()) -> Verdict:
    """Check `answer` against all three rules; `instructions` are the prompt's fixed texts."""
    return Verdict(
        copied=copied_instruction(answer, instructions),
        repeated_sentence=repeated_sentence(answer),
        repeated_span=repeated_span(answer),
    )
