"""A model's tokenizer as its files define it, whatever class transformers 5's AutoTokenizer picks."""

from __future__ import annotations

import os

__all__ = ["load_tokenizer", "tokenizer_loader"]


#: Text that exercises what a tokenizer class may rebuild differently from its tokenizer.json: spaces and word
#: boundaries, digits, punctuation, accents, tabs and newlines.
_TOKENIZER_PROBE = "The quick brown fox, 2023 jumps.\n  Le café — élève!\t650841823 x != y"


def tokenizer_loader(directory: str, trust_remote_code: bool = False) -> str:
    """``"AutoTokenizer"``, or ``"PreTrainedTokenizerFast"`` where AutoTokenizer does not tokenize as the
    directory's own ``tokenizer.json`` does.

    transformers 5's AutoTokenizer builds the class its ``model_type`` maps to, and that class may rebuild the
    tokenizer from the vocabulary with its own normaliser and pre-tokeniser, ignoring ``tokenizer.json``
    (huggingface/transformers#45920, #48206: OLMo-2, Granite, DeepSeek). Silently: a tiny Qwen2 with a
    word-level tokenizer came back as a byte-level BPE that maps most words to one id, so ``bank train``'s task
    loss taught the modules that text and their distance to the teacher grew. Where the two disagree on a probe
    text the file is the tokenizer the model was trained with, so it is loaded verbatim."""
    return _read_tokenizer(directory, trust_remote_code)[1]


def load_tokenizer(model: str, trust_remote_code: bool = False):
    """A model's tokenizer as its files define it (:func:`tokenizer_loader` says which class reads them)."""
    return _read_tokenizer(model, trust_remote_code)[0]


def _read_tokenizer(model: str, trust_remote_code: bool):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    auto = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    path = os.path.join(model, "tokenizer.json")
    if not os.path.isfile(path):
        return auto, "AutoTokenizer"
    from tokenizers import Tokenizer

    own = Tokenizer.from_file(path).encode(_TOKENIZER_PROBE, add_special_tokens=False).ids
    if auto.encode(_TOKENIZER_PROBE, add_special_tokens=False) == own:
        return auto, "AutoTokenizer"
    return PreTrainedTokenizerFast.from_pretrained(model), "PreTrainedTokenizerFast"
