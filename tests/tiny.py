"""Tiny models of every supported family, built from configs in code (no hub, no download)."""

from __future__ import annotations

import os

import torch

VOCAB = 96
WORDS = ("the a of and to in is that for it with as was on be by this are at from or an which his her "
         "le la les de et un une des en du est que pour dans qui par sur au avec il elle ne pas").split()


def tiny_tokenizer(path: str):
    """A word-level tokenizer over a small vocabulary, saved in HF format."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", "<s>"] + WORDS)}
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
    elif family in ("bart", "marian", "m2m_100"):
        cls = {"bart": (tf.BartConfig, tf.BartForConditionalGeneration),
               "marian": (tf.MarianConfig, tf.MarianMTModel),
               "m2m_100": (tf.M2M100Config, tf.M2M100ForConditionalGeneration)}[family]
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
    elif family == "llama":
        cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=dec, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=64, **common)
        model = tf.LlamaForCausalLM(cfg)
    else:
        raise ValueError(family)
    # Random init of a tiny model gives near-uniform logits; widen them so greedy decoding is not a coin-flip
    # between near-ties and comparisons are meaningful.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0) if p.dim() > 1 else None
    model.generation_config.max_length = None
    return model.eval()


def save_tiny(family: str, path: str, enc: int = 6, dec: int = 6, seed: int = 0) -> str:
    model = tiny_model(family, enc, dec, seed)
    model.save_pretrained(path)
    tiny_tokenizer(path)
    return path


SEQ2SEQ = ("t5", "bart", "marian", "m2m_100")
CAUSAL = ("gpt2", "llama")
FAMILIES = SEQ2SEQ + CAUSAL


def exists(path: str) -> bool:
    return os.path.exists(path)
