"""An E-Branchformer block (Kim et al., 2022) made causal, for the residual stream of a decoder-only LLM.

Layout (every sub-layer pre-norm, residuals as in the paper)::

    x = x + 1/2 * FFN1(norm_ff1(x))                                   macaron half-FFN
    a = Attention(norm_att(x))                                        global branch: the LLM's attention
    c = cgMLP(norm_mlp(x))                                            local branch
        cgMLP(u) = W2( r * DWConv31(LayerNorm(g)) ),  [r, g] = split(GELU(W1 u))
    m = concat(a, c)                                                  (.., 2d)
    x = x + Wm( m + DWConv3(m) )                                      merge: depthwise conv k=3, linear 2d->d
    x = x + 1/2 * FFN2(norm_ff2(x))                                   macaron half-FFN

Causal: both depthwise convolutions are padded on the left only (a position sees itself and the k-1
positions before it), the attention uses the LLM's causal mask. Incremental decoding keeps each
convolution's last k-1 inputs on the KV-cache object (:mod:`.streaming`), so cached generation equals
full recomputation; pad positions (read from the attention mask) are zeroed before each convolution so
left padding does not leak into the first real tokens.

Attention: a copy of the neighbouring LLM layer's own attention module, called with the masks and rotary
embeddings the LLM computes for that layer (and its KV-cache slot, ``layer_idx``): its positions are the
LLM's (RoPE, sliding window, Gemma3's q/k norms and per-layer rope base all come for free) and it starts
from trained weights; a separate attention with its own positional scheme would have to learn what the
LLM's position encoding means from scratch. The macaron FFNs are copies of the neighbour's MLP (its
gated activation), the norms copies of its RMSNorms.

Identity initialization: FFN1's and FFN2's output projections and the merge linear are zero, so the
block returns its input exactly. The paper's block ends in a LayerNorm: dropped here, because a norm on
the residual stream of a pre-norm LLM would rescale every later layer's input (no identity start).
"""

from __future__ import annotations

import torch
from torch import nn

from speechkeep.models.blocks.streaming import CausalDepthwiseConv, block_state, past_length, valid_positions


def _copy(module: nn.Module, config) -> nn.Module:
    from copy import deepcopy

    return deepcopy(module, memo={id(config): config})  # the LLM's config is shared, not copied


def _zero_output(mlp: nn.Module) -> nn.Module:
    out = getattr(mlp, "down_proj", None) or getattr(mlp, "fc2", None)
    if out is None:
        raise ValueError(f"{type(mlp).__name__}: no down_proj/fc2 output projection to zero")
    nn.init.zeros_(out.weight)
    if out.bias is not None:
        nn.init.zeros_(out.bias)
    return mlp


class ConvGatedMLP(nn.Module):
    """cgMLP with a causal convolutional spatial gating unit."""

    def __init__(self, d: int, units: int, kernel_size: int = 31, std: float = 0.02):
        super().__init__()
        if units % 2:
            raise ValueError("cgMLP units must be even (split into two halves)")
        self.proj_in = nn.Linear(d, units)
        self.act = nn.GELU()
        self.gate_norm = nn.LayerNorm(units // 2)
        self.gate_conv = CausalDepthwiseConv(units // 2, kernel_size)
        self.proj_out = nn.Linear(units // 2, d)
        for lin in (self.proj_in, self.proj_out):
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)
        # ESPnet's CSGU init: a near-zero kernel and bias 1, so the gate starts close to 1
        nn.init.normal_(self.gate_conv.conv.weight, std=1e-6)
        nn.init.ones_(self.gate_conv.conv.bias)

    def forward(self, x: torch.Tensor, state: dict | None, valid: torch.Tensor | None) -> torch.Tensor:
        r, g = self.act(self.proj_in(x)).chunk(2, dim=-1)
        g = self.gate_norm(g)
        if valid is not None:
            g = g * valid.unsqueeze(-1).to(g.dtype)
        return self.proj_out(r * self.gate_conv(g, state, "gate_conv"))


class EBranchformerBlock(nn.Module):
    """A causal E-Branchformer block built around a neighbouring decoder layer of the LLM (see the module doc)."""

    def __init__(self, neighbour: nn.Module, config, cgmlp_units: int | None = None, kernel_size: int = 31,
                 merge_kernel_size: int = 3):
        super().__init__()
        d = config.hidden_size
        std = float(getattr(config, "initializer_range", 0.02))
        units = cgmlp_units or int(config.intermediate_size)
        self.layer_idx = getattr(neighbour, "layer_idx", getattr(neighbour.self_attn, "layer_idx", 0))
        if hasattr(neighbour, "attention_type"):
            self.attention_type = neighbour.attention_type
        norm = neighbour.input_layernorm
        ff_norm = getattr(neighbour, "pre_feedforward_layernorm", None) or neighbour.post_attention_layernorm
        self.norm_ff1 = _copy(ff_norm, config)
        self.ffn1 = _zero_output(_copy(neighbour.mlp, config))
        self.norm_att = _copy(norm, config)
        self.self_attn = _copy(neighbour.self_attn, config)
        self.norm_mlp = _copy(norm, config)
        self.cgmlp = ConvGatedMLP(d, units, kernel_size, std)
        self.merge_conv = CausalDepthwiseConv(2 * d, merge_kernel_size)
        self.merge_proj = nn.Linear(2 * d, d)
        nn.init.zeros_(self.merge_proj.weight)
        nn.init.zeros_(self.merge_proj.bias)
        self.norm_ff2 = _copy(ff_norm, config)
        self.ffn2 = _zero_output(_copy(neighbour.mlp, config))

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, position_ids=None, cache=None,
                use_cache: bool | None = False, position_embeddings=None, **kwargs) -> torch.Tensor:
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)
        kwargs.pop("past_key_values", None)
        state = block_state(cache, self)
        valid = valid_positions(attention_mask, hidden_states.shape[1], past_length(state))
        x = hidden_states + 0.5 * self.ffn1(self.norm_ff1(hidden_states))
        a, _ = self.self_attn(hidden_states=self.norm_att(x), attention_mask=attention_mask, position_ids=position_ids,
                              cache=cache, use_cache=use_cache, position_embeddings=position_embeddings, **kwargs)
        c = self.cgmlp(self.norm_mlp(x), state, valid)
        m = torch.cat([a, c], dim=-1)
        mc = m * valid.unsqueeze(-1).to(m.dtype) if valid is not None else m
        x = x + self.merge_proj(m + self.merge_conv(mc, state, "merge_conv"))
        x = x + 0.5 * self.ffn2(self.norm_ff2(x))
        if state is not None:
            state["len"] = state.get("len", 0) + hidden_states.shape[1]
        return x
