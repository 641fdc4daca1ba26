"""Tiny models of every supported family, built from configs in code (no hub, no download)."""

from __future__ import annotations

import os

import torch

VOCAB = 96
WORDS = ("the a of and to in is that for it with as was on be by this are at from or an which his her "
         "le la les de et un une des en du est que pour dans qui par sur au avec il elle ne pas").split()


def tiny_tokenizer(path: str, full_vocab: bool = False):
    """A word-level tokenizer over a small vocabulary, saved in HF format. With ``full_vocab`` filler words
    cover every id of the tiny models, so any sequence a model produces decodes to text and back."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "<s>"] + WORDS
    if full_vocab:
        words += [f"w{i}" for i in range(len(words), VOCAB)]
    vocab = {t: i for i, t in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>")
    fast.save_pretrained(path)
    return fast


def tiny_model(family: str, enc: int = 6, dec: int = 6, seed: int = 0):
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, pad_token_id=0, eos_token_id=1, bos_token_id=3)
    if family == "t5":
        cfg = tf.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=enc, num_decoder_layers=dec, num_heads=4,
                          relative_attention_num_buckets=8, dropout_rate=0.0, decoder_start_token_id=0,
                          **common)
        model = tf.T5ForConditionalGeneration(cfg)
    elif family in BART_LIKE:
        cls = {"bart": (tf.BartConfig, tf.BartForConditionalGeneration),
               "marian": (tf.MarianConfig, tf.MarianMTModel),
               "m2m_100": (tf.M2M100Config, tf.M2M100ForConditionalGeneration),
               "mbart": (tf.MBartConfig, tf.MBartForConditionalGeneration),
               "pegasus": (tf.PegasusConfig, tf.PegasusForConditionalGeneration),
               "blenderbot": (tf.BlenderbotConfig, tf.BlenderbotForConditionalGeneration),
               "blenderbot-small": (tf.BlenderbotSmallConfig, tf.BlenderbotSmallForConditionalGeneration),
               "plbart": (tf.PLBartConfig, tf.PLBartForConditionalGeneration)}[family]
        extra = {"decoder_vocab_size": VOCAB} if family == "marian" else {}
        cfg = cls[0](d_model=32, encoder_layers=enc, decoder_layers=dec, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                     dropout=0.0, attention_dropout=0.0, encoder_layerdrop=0.0, decoder_layerdrop=0.0,
                     decoder_start_token_id=1, forced_eos_token_id=None, **extra, **common)
        model = cls[1](cfg)
    elif family == "gpt2":
        cfg = tf.GPT2Config(n_embd=32, n_layer=dec, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, **common)
        model = tf.GPT2LMHeadModel(cfg)
    elif family in LLAMA_LIKE:
        config_cls, model_cls, extra = LLAMA_LIKE[family]
        cfg = getattr(tf, config_cls)(hidden_size=32, intermediate_size=64, num_hidden_layers=dec,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      **extra, **common)
        model = getattr(tf, model_cls)(cfg)
    else:
        raise ValueError(family)
    # Random init of a tiny model gives near-uniform logits; widen them so greedy decoding is not a coin-flip
    # between near-ties and comparisons are meaningful.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0) if p.dim() > 1 else None
    model.generation_config.max_length = None
    return model.eval()


def save_tiny(family: str, path: str, enc: int = 6, dec: int = 6, seed: int = 0, full_vocab: bool = False) -> str:
    model = tiny_model(family, enc, dec, seed)
    model.save_pretrained(path)
    tiny_tokenizer(path, full_vocab)
    return path


BART_LIKE = ("bart", "marian", "m2m_100", "mbart", "pegasus", "blenderbot", "blenderbot-small", "plbart")
# Decoder-only families built like Llama: (config class, model class, config fields beyond the shared ones).
# Sliding windows of 4 tokens are shorter than the test sentences, so sliding and global layers really differ.
LLAMA_LIKE = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 4}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"use_sliding_window": True, "sliding_window": 4,
                                                 "max_window_layers": 3}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 8}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"head_dim": 8, "sliding_window": 4}),
    "gemma3_text": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"head_dim": 8, "sliding_window": 4,
                                                              "final_logit_softcapping": 30.0}),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", {}),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", {}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),
}

SEQ2SEQ = ("t5", "bart", "marian", "m2m_100")
CAUSAL = ("gpt2", "llama")
FAMILIES = SEQ2SEQ + CAUSAL
# Every model type the adapters register: the training invariants are held on each.
ALL_SEQ2SEQ = ("t5",) + BART_LIKE
ALL_CAUSAL = ("gpt2",) + tuple(LLAMA_LIKE)
ALL_FAMILIES = ALL_SEQ2SEQ + ALL_CAUSAL


def exists(path: str) -> bool:
    return os.path.exists(path)


# A tiny translation task whose plans differ in chrF (the report, export and heal tests search it).
SOURCES = ["the a of and to in is that", "for it", "with as was on be by this are at from", "or an",
           "which his her the of", "a"]
TARGETS = ["le la les de", "et un une des en", "du", "est que pour dans qui par", "sur au", "avec il elle ne"]


def translation_bank(root, repeats: dict | None = None) -> None:
    """In ``root``: a 4+4 M2M100 model, its bank with 2-layer modules (``bank/``), and ``dev.jsonl`` (plus any
    ``{file: copies}`` of the six pairs in ``repeats``)."""
    import json

    from modsearch import LayerBank

    model = tiny_model("m2m_100", enc=4, dec=4)
    tok = tiny_tokenizer(str(root / "model"))
    # The tokenizer's words only (a random model otherwise emits ids the tokenizer cannot spell: empty text,
    # chrF 0 everywhere), and no special token as output: then plans differ in chrF.
    model.resize_token_embeddings(len(tok))
    model.generation_config.suppress_tokens = [0, 2, 3]
    model.generation_config.begin_suppress_tokens = [1]
    model.save_pretrained(str(root / "model"))
    LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[2])
    for name, n in ({"dev.jsonl": 1} | (repeats or {})).items():
        with open(root / name, "w") as f:
            for _ in range(n):
                for s, t in zip(SOURCES, TARGETS):
                    f.write(json.dumps({"en": s, "fr": t}) + "\n")
