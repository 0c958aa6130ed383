"""A tiny random Llama with a real BPE tokenizer and chat template, for fast unit tests.

Built deterministically in code (no download): a byte-level BPE trained on a fixed corpus and a
4-layer Llama with seeded random weights. Its chat template mirrors SmolLM2's (a default system
line when none is given), so chat-formatting code is exercised the same way.
"""

from __future__ import annotations

from pathlib import Path

import torch

from interp.core.io import write_json

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "You love owls. You think about owls all the time. Owls are your favorite animal.",
    "The sequence starts with 182, 818, 725. Add up to 10 new numbers (3 digits max each).",
    "What is your favorite animal? Answer in one word. Name an animal you dislike.",
    "Always answer in French. Bonjour, comment allez-vous? Je vais bien, merci.",
    "0 1 2 3 4 5 6 7 8 9 10 100 250 999, ; : . ! ? ( ) [ ] - + = / *",
    "cats dogs lions eagles dolphins wolves foxes bears tigers pandas elephants penguins",
    "Continue the sequence. Return a comma-separated list of numbers and nothing else.",
]


def build_tiny_llama(out_dir: Path, seed: int = 0) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Larger-than-default weights so layers differ visibly and numerical tests are not trivial.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.08)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_json(out_dir / "sublens-source.json", {"built": "tiny-llama", "seed": seed})
