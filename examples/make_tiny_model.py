"""Write a small BART-style translation model (random weights, 6+6 layers) with a word-level tokenizer.

Used by examples/quickstart.sh to show the whole bank → plan → assemble → export path in a few seconds, on a
model built from a config in code (no hub needed).
"""

import sys

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import BartConfig, BartForConditionalGeneration, PreTrainedTokenizerFast

out = sys.argv[1] if len(sys.argv) > 1 else "examples/tiny-bart"
words = "the a of and to in is that for it with as was on be by le la les de et un une des en du est que".split()
vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", "<s>"] + words)}
tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                        bos_token="<s>").save_pretrained(out)
torch.manual_seed(0)
config = BartConfig(vocab_size=len(vocab), d_model=64, encoder_layers=6, decoder_layers=6, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=64,
                    pad_token_id=0, eos_token_id=1, bos_token_id=3, decoder_start_token_id=1)
BartForConditionalGeneration(config).save_pretrained(out)
print(f"wrote {out}")
