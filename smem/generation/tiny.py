"""A tiny, deterministic Qwen3-style model and tokenizer, built in-process in about a second.

Tests and fast app checks need a real causal LM with a real chat template, KV cache and
`<think>` tokens, but cannot download anything and cannot afford a 0.5B model. This module
trains a small byte-level BPE with Qwen's pre-tokenizer and special tokens on a built-in text,
writes a ChatML + `<think>` template that mirrors Qwen3's, and pairs it with a randomly
initialised 2-layer `Qwen3ForCausalLM`. Random weights with a large init range make the model
emit varied tokens, so memories get re-retrieved and swapped while it "answers".
"""

from __future__ import annotations

import functools

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
THINK_TOKENS = ("<think>", "</think>")

# Qwen2/Qwen3's pre-tokenizer split: words, single digits, punctuation runs, newline runs.
QWEN_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Mirrors Qwen3's template (tools left out): the first system message leads, a later system
# message renders in place (the memory block relies on that), thinking from past turns is
# dropped, and `enable_thinking=False` pre-fills an empty think block.
CHAT_TEMPLATE = (
    "{%- if messages and messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(last_query_index=messages|length - 1) %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}{%- set ns.last_query_index = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content %}"
    "{%- set reasoning = '' %}"
    "{%- if '</think>' in content %}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index and reasoning %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}"
    "{%- else %}"
    "{{- '<|im_start|>assistant\\n' + content }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

_CORPUS = """\
The student worked through fractions today and finally saw why one half equals two quarters.
She likes examples with pizza, music and football; long lists of rules make her switch off.
When a problem looks hard, breaking it into small steps helps more than giving the answer.
Her mother asked for weekly notes; her father prefers a short call on Sunday evenings.
The family is planning a trip to the mountains in July, and the dog needs a sitter.
Remember the dentist appointment on Tuesday at 3 pm, and buy milk, bread and apples.
Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.
The derivative of x squared is two x; integrals add up tiny slices of area.
In 1492 Columbus sailed west; the French Revolution began in 1789.
Reading aloud helped with fluency, but spelling tests still cause anxiety.
Code review: the function returns None when the list is empty, which breaks the caller.
Def main(): print("hello, world") — then run python app.py and open the browser.
Café, naïve, über, jalapeño, São Paulo, Zürich, Kraków, Dvořák, smörgåsbord.
日本語のテキスト、中文文本、한국어 텍스트, Ελληνικά, русский текст, עברית, العربية.
Emoji: 😀 🎉 👍 🍕 ⚽ 🎵 🧠 ❤️ 👨‍👩‍👧 — mixed with words and numbers like 3.14 and 42.
"""


@functools.lru_cache(maxsize=4)  # a few vocab sizes per test process; each entry is small JSON
def _trained_tokenizer_json(vocab_size: int) -> str:
    """Train once per process; BPE training on a fixed corpus is deterministic."""
    tokenizer = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The corpus four times over (chosen): enough pair counts for BPE to reach the small vocab.
    tokenizer.train_from_iterator(_CORPUS.splitlines() * 4, trainer=trainer)
    # Like Qwen3: the think markers are single added tokens, but not "special" ones.
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in THINK_TOKENS])
    return tokenizer.to_str()


def build_tokenizer(vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """The tiny tokenizer, with Qwen's special tokens and a Qwen3-like chat template."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_tokenizer_json(vocab_size)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )
    return tokenizer


def tiny_config(tokenizer: PreTrainedTokenizerFast, vocab_size: int | None = None) -> Qwen3Config:
    """A 2-layer, 64-wide Qwen3 whose ids match the tokenizer's; `vocab_size` may pad it.

    Sizes chosen as the smallest that keep Qwen3's real code paths (grouped-query attention:
    4 query heads over 2 key/value heads; RoPE) so tests run in milliseconds; the init range
    0.5 (Qwen3's default is 0.02) makes random weights give varied, non-uniform tokens."""
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    return Qwen3Config(
        vocab_size=max(vocab_size or 0, len(tokenizer)),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=32768,
        initializer_range=0.5,
        tie_word_embeddings=True,
        bos_token_id=endoftext,
        eos_token_id=im_end,
        pad_token_id=endoftext,
    )


def build(seed: int = 0, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """Return `(model, tokenizer)`; the same seed gives the same weights, without touching global RNG."""
    tokenizer = build_tokenizer()
    config = tiny_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    model.generation_config.eos_token_id = [config.eos_token_id, config.pad_token_id]
    model.generation_config.pad_token_id = config.pad_token_id
    model.to(device=device, dtype=dtype).eval()
    return model, tokenizer
