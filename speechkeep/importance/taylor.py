"""First-order Taylor importance ``I = |dL/dtheta * theta|`` (Molchanov et al. 2019; seed 001 eq. 2).

The loss is token-weighted over the whole dataset: ``L = sum of response-token NLL / total response
tokens``. Two accumulation conventions (METHODS §2):

- ``abs_sum`` (default; LLM-Pruner "param_first"): ``sum over batches of |g_b * theta|`` where ``g_b``
  is batch b's share of the dataset gradient. One fp32 accumulator per parameter.
- ``signed_sum`` (the "Unveiling Linguistic Regions" code): ``|theta * sum_b g_b|``, gradients
  accumulated with sign; the gradient buffers are the accumulator (no extra copy).

Accumulators are fp32 whatever the model's dtype. Importance is measured for the LLM's parameters
and the adaptor's; the frozen encoder is not scored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import torch

from speechkeep.errors import SpeechkeepError
from speechkeep.models.speech_llm import Query, SpeechLLM

Convention = Literal["abs_sum", "signed_sum"]
DEFAULT_CONVENTION: Convention = "abs_sum"


@dataclass
class ImportanceResult:
    scores: dict[str, torch.Tensor]
    """Parameter name -> fp32 importance, same shape as the parameter."""
    meta: dict = field(default_factory=dict)


def scored_parameters(model: SpeechLLM, include_adaptor: bool = True) -> dict[str, torch.nn.Parameter]:
    """LLM parameters (names as in the plain LLM, e.g. ``model.layers.3.mlp.up_proj.weight``) and,
    optionally, the adaptor's (``adaptor.*``). Tied weights appear once."""
    params = {n: p for n, p in model.llm.named_parameters()}
    if include_adaptor:
        params.update({f"adaptor.{n}": p for n, p in model.adaptor.named_parameters()})
    return params


def compute_importance(model: SpeechLLM, batches: Sequence[Sequence[Query]], convention: Convention = DEFAULT_CONVENTION,
                       include_adaptor: bool = True, progress: bool = True, procs=None) -> ImportanceResult:
    """Importance of every scored parameter over ``batches`` (each a list of queries with responses).

    ``procs`` (:class:`speechkeep.distributed.Processes`, several processes of a launch): batch b runs
    on process ``b % world`` and the accumulators (``abs_sum``) or summed gradients (``signed_sum``)
    are summed over the processes, so every process ends with the scores of the whole dataset
    (equal to one process's up to the order of float sums)."""
    from tqdm.auto import tqdm

    if convention not in ("abs_sum", "signed_sum"):
        raise SpeechkeepError(f"unknown importance convention '{convention}'; use abs_sum or signed_sum")
    if not batches:
        raise SpeechkeepError("importance needs a non-empty dataset")
    total_tokens = sum(len(model.chat.response_ids(q.response)) for b in batches for q in b if q.response is not None)
    if total_tokens == 0:
        raise SpeechkeepError("importance needs response tokens: every label is masked (no responses in the data)")
    params = scored_parameters(model, include_adaptor)
    saved_flags = {n: p.requires_grad for n, p in params.items()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
        p.grad = None
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()} if convention == "abs_sum" else None
    was_training = model.training
    model.eval()  # no dropout: importance of the model as it is
    t0 = time.perf_counter()
    try:
        rank, world = (procs.rank, procs.world) if procs is not None else (0, 1)
        mine = [b for i, b in enumerate(batches) if i % world == rank]
        for b in tqdm(mine, desc=f"importance[{convention}]", disable=not progress, dynamic_ncols=True):
            loss_sum, _ = model.loss(model.prepare(b), reduction="sum")
            (loss_sum / total_tokens).backward()
            if acc is not None:
                with torch.no_grad():
                    for n, p in params.items():
                        if p.grad is not None:
                            acc[n].add_((p.grad.float() * p.detach().float()).abs_())
                        p.grad = None
        with torch.no_grad():
            if acc is None:
                grads = {n: p.grad.float() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
                         for n, p in params.items()}
                if world > 1:
                    procs.all_reduce_sum(grads.values())
                acc = {n: (g * params[n].detach().float()).abs_() for n, g in grads.items()}
            elif world > 1:
                procs.all_reduce_sum(acc.values())
    finally:
        for n, p in params.items():
            p.grad = None
            p.requires_grad_(saved_flags[n])
        model.train(was_training)
    meta = {"convention": convention, "n_batches": len(batches),
            **({"processes": world, "batches_here": len(mine)} if world > 1 else {}), "n_queries": sum(len(b) for b in batches),
            "response_tokens": total_tokens, "seconds": round(time.perf_counter() - t0, 2),
            "loss": "token-weighted NLL of response tokens (sum NLL / total tokens)"}
    from speechkeep.models.upscaling import layer_origin

    origin = layer_origin(model.llm)
    if origin is not None:  # an up-scaled LLM: summaries map its blocks to their original index
        meta["layer_origin"] = origin
    return ImportanceResult(acc, meta)


def plain_forward_backward_seconds(model: SpeechLLM, batches: Iterable[Sequence[Query]]) -> float:
    """Time of plain forward+backward passes over the same batches (the benchmark's reference)."""
    params = scored_parameters(model)
    flags = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)
    model.eval()
    t0 = time.perf_counter()
    try:
        for b in batches:
            loss, _ = model.loss(model.prepare(b), reduction="sum")
            loss.backward()
            for p in params.values():
                p.grad = None
    finally:
        for n, p in params.items():
            p.requires_grad_(flags[n])
    return time.perf_counter() - t0
