"""Write a tiny, valid llama-architecture GGUF in well under a second (nothing downloaded).

2 blocks, embedding 64, 4 heads / 2 KV heads, a 302-token SentencePiece-style vocabulary (3 control tokens,
256 byte-fallback tokens, a few words), a chat template, random N(0, 0.02) weights and unit norms. llama.cpp
serves it and answers with gibberish: enough to try the gateway in front of a real engine
(`agentcloud local tiny-model`), and what the tests serve. Needs the `local` extra (gguf, numpy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = (
    "hello world the a of and to in is it you that he was for on are with as I his they be at one have "
    "this from or had by hot word but what some we can out other were all"
).split()
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def write_tiny_gguf(
    path: Path,
    n_embd: int = 64,
    n_layers: int = 2,
    n_head: int = 4,
    n_head_kv: int = 2,
    context: int = 2048,
    seed: int = 0,
    name: str = "tiny-test",
) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + [f"▁{w}" for w in WORDS]
    tokens = tokens[:302] + [f"▁w{i}" for i in range(302 - len(tokens))]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [
        gguf.TokenType.BYTE
    ] * 256
    types += [gguf.TokenType.NORMAL] * (len(tokens) - len(types))
    vocab, head_dim, ffn = len(tokens), n_embd // n_head, n_embd * 2

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(context)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(vocab - 259)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_chat_template(CHAT_TEMPLATE)

    def mat(rows: int, cols: int) -> np.ndarray:  # type: ignore[type-arg]
        return rng.normal(0, 0.02, size=(rows, cols)).astype(np.float16)

    w.add_tensor("token_embd.weight", mat(vocab, n_embd))
    w.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    w.add_tensor("output.weight", mat(vocab, n_embd))
    kv = head_dim * n_head_kv
    for i in range(n_layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", mat(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.attn_k.weight", mat(kv, n_embd))
        w.add_tensor(f"blk.{i}.attn_v.weight", mat(kv, n_embd))
        w.add_tensor(f"blk.{i}.attn_output.weight", mat(n_embd, n_embd))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", mat(ffn, n_embd))
        w.add_tensor(f"blk.{i}.ffn_up.weight", mat(ffn, n_embd))
        w.add_tensor(f"blk.{i}.ffn_down.weight", mat(n_embd, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
