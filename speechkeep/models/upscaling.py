"""Depth up-scaling of a Hugging Face decoder: insert new blocks into its layer ``ModuleList`` (seed 003).

Works for any causal LM whose decoder (``llm.get_decoder()``) keeps its blocks in ``.layers`` and reads
``config.num_hidden_layers`` (Llama, Gemma3, Qwen2, Mistral, ...). After insertion every module's
``layer_idx`` (the KV-cache slot), ``config.num_hidden_layers`` and every per-layer config list
(``layer_types``: Gemma3's sliding/full pattern, ...) follow the new order; a new block takes its
neighbour's per-layer entries. ``config.speechkeep_layer_origin`` lists, per block, its index in the
original LLM (None for a new block): importance summaries and ``layer_lr`` map layers through it.

A new block is an :class:`UpscaledBlock` around either a copy of its neighbour decoder layer with the
output projections (``o_proj``, ``down_proj``) zeroed (LLaMA-Pro) or an
:class:`~speechkeep.models.blocks.ebranchformer.EBranchformerBlock`; both return their input unchanged
when inserted (identity initialization). The neighbour is the original layer right below the insertion
point (layer 0 for blocks inserted below it).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from speechkeep.models.blocks.streaming import block_state, past_length, speech_mask

PLACEMENTS = ("interleaved", "top", "bottom", "middle", "sandwich")
BLOCKS = ("transformer", "ebranchformer")
ORIGIN_ATTR = "speechkeep_layer_origin"


def default_count(n_layers: int, share: float = 0.25) -> int:
    """25% of the depth, rounded half up, at least 1."""
    return max(1, int(n_layers * share + 0.5))


def insertion_points(n_layers: int, count: int, placement: str) -> list[int]:
    """Original layer index each new block goes right after (-1: below layer 0), sorted.

    interleaved: one after every group of n/count layers (LLaMA-Pro; the last group ends at the top);
    top / bottom: all above the last / below the first layer; middle: all after layer n/2 - 1;
    sandwich: half below the first layer, the rest (the larger half) above the last."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement '{placement}': use one of {', '.join(PLACEMENTS)}")
    if count < 1:
        raise ValueError("count must be at least 1")
    if placement == "interleaved":
        return [int((k + 1) * n_layers / count + 0.5) - 1 for k in range(count)]  # rounded half up
    if placement == "top":
        return [n_layers - 1] * count
    if placement == "bottom":
        return [-1] * count
    if placement == "middle":
        return [n_layers // 2 - 1] * count
    return [-1] * (count // 2) + [n_layers - 1] * (count - count // 2)


def _layers(llm: nn.Module) -> nn.ModuleList:
    layers = getattr(llm.get_decoder(), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(llm).__name__}: its decoder keeps no ModuleList of blocks in .layers: "
                         "depth up-scaling needs one")
    return layers


def layer_origin(llm: nn.Module) -> list[int | None] | None:
    """Per block of an up-scaled LLM, its index in the original LLM (None: a new block); None if not up-scaled."""
    origin = getattr(llm.config, ORIGIN_ATTR, None)
    return list(origin) if origin is not None else None


class UpscaledBlock(nn.Module):
    """A new block in the residual stream. With ``speech_only``, positions that are not speech keep
    their input (the block's output is used at speech positions only). Attributes the LLM's forward
    reads from a layer (``attention_type``, ...) are those of the wrapped block."""

    def __init__(self, block: nn.Module, speech_only: bool = False):
        super().__init__()
        self.block = block
        self.speech_only = speech_only

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("block"), name)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        out = self.block(hidden_states, *args, **kwargs)
        if isinstance(out, tuple):
            out = out[0]
        if not self.speech_only:
            return out
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        state = block_state(cache, self)
        past = past_length(state)
        if state is not None:
            state["len"] = past + hidden_states.shape[1]
        speech = speech_mask(hidden_states.shape[0], past, hidden_states.shape[1], hidden_states.device)
        if speech is None:
            return hidden_states  # no speech positions known: text passes through
        return torch.where(speech.unsqueeze(-1), out, hidden_states)


def copy_module(module: nn.Module, config=None) -> nn.Module:
    """A deep copy of a block that shares the LLM's config object (layers keep a reference to it, e.g.
    for the attention implementation) instead of copying it."""
    return copy.deepcopy(module, memo={id(config): config} if config is not None else None)


def transformer_block(neighbour: nn.Module, config=None) -> nn.Module:
    """LLaMA-Pro: a copy of ``neighbour`` with its attention and MLP output projections zeroed."""
    block = copy_module(neighbour, config)
    zeroed = 0
    for name in ("o_proj", "down_proj", "dense", "fc2"):
        for mod_name, mod in block.named_modules():
            if mod_name.endswith(name) and isinstance(mod, nn.Linear):
                nn.init.zeros_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
                zeroed += 1
    if zeroed < 2:
        raise ValueError(f"{type(neighbour).__name__}: no o_proj/down_proj output projections to zero")
    return block


def _renumber(llm: nn.Module, layers: nn.ModuleList, old_n: int, source: list[int]) -> None:
    """layer_idx of every module = its block's position; per-layer config lists follow ``source``
    (per new position, the original layer whose entries it takes)."""
    for i, layer in enumerate(layers):
        for m in layer.modules():
            if hasattr(m, "layer_idx") and not isinstance(m, UpscaledBlock):
                m.layer_idx = i
    config = llm.config
    for key, value in list(vars(config).items()):
        if "layer" in key and key != ORIGIN_ATTR and isinstance(value, (list, tuple)) and len(value) == old_n:
            setattr(config, key, type(value)(value[j] for j in source))
    config.num_hidden_layers = len(layers)


def upscale(llm: nn.Module, settings: dict[str, Any]) -> nn.Module:
    """The ``upscale`` model transform: insert new blocks (``settings``: ``block``, ``after`` = the
    original layer index each new block follows, ``speech_only``, ``cgmlp_units``, ``kernel_size``,
    ``merge_kernel_size``), renumber, and freeze nothing but leave the new blocks trainable."""
    from speechkeep.models.blocks.ebranchformer import EBranchformerBlock

    block_type = settings.get("block", "transformer")
    if block_type not in BLOCKS:
        raise ValueError(f"block '{block_type}': use one of {', '.join(BLOCKS)}")
    layers = _layers(llm)
    if layer_origin(llm) is not None:
        raise ValueError("the LLM is already up-scaled")
    n = len(layers)
    after = sorted(int(a) for a in settings["after"])
    if any(a < -1 or a >= n for a in after):
        raise ValueError(f"insertion points {after} outside -1..{n - 1}")
    old = list(layers)
    new_order: list[nn.Module] = []
    origin: list[int | None] = []
    source: list[int] = []

    def add_new(j: int) -> None:
        nb = old[max(j, 0)]
        if block_type == "transformer":
            inner = transformer_block(nb, llm.config)
        else:
            inner = EBranchformerBlock(nb, llm.config, cgmlp_units=settings.get("cgmlp_units"),
                                       kernel_size=int(settings.get("kernel_size", 31)),
                                       merge_kernel_size=int(settings.get("merge_kernel_size", 3)))
        block = UpscaledBlock(inner, bool(settings.get("speech_only", False)))
        ref = next(nb.parameters())
        block.to(device=ref.device, dtype=ref.dtype)
        for p in block.parameters():
            p.requires_grad_(True)
        new_order.append(block)
        origin.append(None)
        source.append(max(j, 0))

    for _ in range(after.count(-1)):
        add_new(-1)
    for j, layer in enumerate(old):
        new_order.append(layer)
        origin.append(j)
        source.append(j)
        for _ in range(after.count(j)):
            add_new(j)
    decoder = llm.get_decoder()
    decoder.layers = nn.ModuleList(new_order)
    _renumber(llm, decoder.layers, n, source)
    setattr(llm.config, ORIGIN_ATTR, origin)
    return llm


def new_block_indices(settings: dict[str, Any], n_original: int | None = None) -> list[int]:
    """Positions of the new blocks in the up-scaled layer list, from the transform's settings."""
    after = sorted(int(a) for a in settings["after"])
    out, pos = [], 0
    for _ in range(after.count(-1)):
        out.append(pos)
        pos += 1
    top = max(after + [n_original - 1 if n_original else -1])
    for j in range(top + 1):
        pos += 1  # original layer j
        for _ in range(after.count(j)):
            out.append(pos)
            pos += 1
    return out


def owns(key: str, settings: dict[str, Any]) -> bool:
    """Whether a state-dict key belongs to a new block (saved with the model; the base LLM is referenced)."""
    return any(f".layers.{i}.block." in f".{key}" for i in new_block_indices(settings))


def drop_upscale(llm: nn.Module) -> nn.Module:
    """Remove the new blocks and restore the original numbering and config: the exact base LLM."""
    origin = layer_origin(llm)
    if origin is None:
        return llm
    decoder = llm.get_decoder()
    old_n = len(decoder.layers)
    keep = [i for i, o in enumerate(origin) if o is not None]
    decoder.layers = nn.ModuleList([decoder.layers[i] for i in keep])
    _renumber(llm, decoder.layers, old_n, keep)
    delattr(llm.config, ORIGIN_ATTR)
    return llm


def drop_upscale_model(model) -> None:
    """:func:`drop_upscale` on a SpeechLLM, and its ``upscale`` transform record removed: it then saves
    as its base LLM plus the adaptor (the recovered text LLM is exactly the base; the adaptor stays)."""
    names = [t["name"] for t in model.transforms]
    if "upscale" in names and names[-1] != "upscale":
        raise ValueError("another transform was applied after 'upscale': drop it first")
    model.llm = drop_upscale(model.llm)
    model.transforms = [t for t in model.transforms if t["name"] != "upscale"]
