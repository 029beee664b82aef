"""Convert a CTranslate2 Whisper model (``model.bin``) to a transformers ``WhisperForConditionalGeneration``.

CTranslate2's binary format (version 6): ``uint32 version``, ``str spec``, ``uint32 revision``,
``uint32 n_vars``, then per variable ``str name, uint8 rank, uint32 dims[rank], uint8 dtype,
uint32 n_bytes, bytes``, then ``uint32 n_aliases`` of ``(str alias, str target)``. Strings are
``uint16 length`` (including a trailing NUL) + bytes. Attention projections are fused (q|k|v), and
Whisper's key projections have no bias (their slice of the fused bias is zero).
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import torch

from speechkeep.errors import ModelSpecError

# CTranslate2 DataType enum.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}


def read_ct2_model(path: str | Path) -> dict[str, np.ndarray]:
    """Read every variable of a CTranslate2 ``model.bin`` as numpy arrays (aliases resolved)."""
    path = Path(path)
    data = path.read_bytes()
    off = 0

    def take(fmt: str):
        nonlocal off
        vals = struct.unpack_from(fmt, data, off)
        off += struct.calcsize(fmt)
        return vals

    def take_str() -> str:
        nonlocal off
        (n,) = take("<H")
        s = data[off : off + n - 1].decode()
        off += n
        return s

    (version,) = take("<I")
    if version < 5:
        raise ModelSpecError(f"{path}: CTranslate2 binary version {version} is not supported (need >= 5)")
    spec = take_str()
    if spec != "WhisperSpec":
        raise ModelSpecError(f"{path}: expected a CTranslate2 WhisperSpec model, found '{spec}'")
    take("<I")  # spec revision
    (n_vars,) = take("<I")
    out: dict[str, np.ndarray] = {}
    for _ in range(n_vars):
        name = take_str()
        (rank,) = take("<B")
        dims = take("<" + "I" * rank) if rank else ()
        (dtype_id,) = take("<B")
        (n_bytes,) = take("<I")
        raw = data[off : off + n_bytes]
        off += n_bytes
        dt = _CT2_DTYPES.get(dtype_id)
        if dt is None:
            raise ModelSpecError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
        if dt == "bfloat16":
            arr = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).float().numpy()
        else:
            arr = np.frombuffer(raw, dtype=dt).copy()
        out[name] = arr.reshape(dims) if rank else arr.reshape(())
    (n_alias,) = take("<I")
    for _ in range(n_alias):
        alias, target = take_str(), take_str()
        out[alias] = out[target]
    return out


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32).copy())


def ct2_to_hf_state_dict(v: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], dict]:
    """Map CTranslate2 Whisper variables to transformers names; also return config dimensions."""
    sd: dict[str, torch.Tensor] = {}
    d_model = v["encoder/conv1/weight"].shape[0]
    n_enc = len({m.group(1) for k in v if (m := re.match(r"encoder/layer_(\d+)/", k))})
    n_dec = len({m.group(1) for k in v if (m := re.match(r"decoder/layer_(\d+)/", k))})

    def ln(dst: str, src: str) -> None:
        sd[dst + ".weight"] = _t(v[src + "/gamma"])
        sd[dst + ".bias"] = _t(v[src + "/beta"])

    def lin(dst: str, src: str, bias: bool = True) -> None:
        sd[dst + ".weight"] = _t(v[src + "/weight"])
        if bias:
            sd[dst + ".bias"] = _t(v[src + "/bias"])

    def fused(dsts: list[str], src: str) -> None:
        ws = np.split(v[src + "/weight"], len(dsts), axis=0)
        bs = np.split(v[src + "/bias"], len(dsts), axis=0)
        for dst, w, b in zip(dsts, ws, bs):
            sd[dst + ".weight"] = _t(w)
            if not dst.endswith("k_proj"):  # Whisper key projections have no bias
                sd[dst + ".bias"] = _t(b)

    e, d = "model.encoder", "model.decoder"
    lin(f"{e}.conv1", "encoder/conv1")
    lin(f"{e}.conv2", "encoder/conv2")
    sd[f"{e}.embed_positions.weight"] = _t(v["encoder/position_encodings/encodings"])
    for i in range(n_enc):
        s, t = f"encoder/layer_{i}", f"{e}.layers.{i}"
        ln(f"{t}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        fused([f"{t}.self_attn.q_proj", f"{t}.self_attn.k_proj", f"{t}.self_attn.v_proj"], f"{s}/self_attention/linear_0")
        lin(f"{t}.self_attn.out_proj", f"{s}/self_attention/linear_1")
        ln(f"{t}.final_layer_norm", f"{s}/ffn/layer_norm")
        lin(f"{t}.fc1", f"{s}/ffn/linear_0")
        lin(f"{t}.fc2", f"{s}/ffn/linear_1")
    ln(f"{e}.layer_norm", "encoder/layer_norm")

    sd[f"{d}.embed_tokens.weight"] = _t(v["decoder/embeddings/weight"])
    sd[f"{d}.embed_positions.weight"] = _t(v["decoder/position_encodings/encodings"])
    for i in range(n_dec):
        s, t = f"decoder/layer_{i}", f"{d}.layers.{i}"
        ln(f"{t}.self_attn_layer_norm", f"{s}/self_attention/layer_norm")
        fused([f"{t}.self_attn.q_proj", f"{t}.self_attn.k_proj", f"{t}.self_attn.v_proj"], f"{s}/self_attention/linear_0")
        lin(f"{t}.self_attn.out_proj", f"{s}/self_attention/linear_1")
        ln(f"{t}.encoder_attn_layer_norm", f"{s}/attention/layer_norm")
        lin(f"{t}.encoder_attn.q_proj", f"{s}/attention/linear_0")
        fused([f"{t}.encoder_attn.k_proj", f"{t}.encoder_attn.v_proj"], f"{s}/attention/linear_1")
        lin(f"{t}.encoder_attn.out_proj", f"{s}/attention/linear_2")
        ln(f"{t}.final_layer_norm", f"{s}/ffn/layer_norm")
        lin(f"{t}.fc1", f"{s}/ffn/linear_0")
        lin(f"{t}.fc2", f"{s}/ffn/linear_1")
    ln(f"{d}.layer_norm", "decoder/layer_norm")

    dims = dict(
        vocab_size=v["decoder/embeddings/weight"].shape[0],
        num_mel_bins=v["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=n_enc,
        decoder_layers=n_dec,
        encoder_attention_heads=int(v["encoder/num_heads"]),
        decoder_attention_heads=int(v["decoder/num_heads"]),
        encoder_ffn_dim=v["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=v["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=v["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=v["decoder/position_encodings/encodings"].shape[0],
    )
    return sd, dims


def convert_ct2_whisper(ct2_dir: str | Path, out_dir: str | Path) -> None:
    """Write a transformers Whisper directory (model, feature extractor, tokenizer) from a CTranslate2 one."""
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    variables = read_ct2_model(ct2_dir / "model.bin")
    sd, dims = ct2_to_hf_state_dict(variables)
    extra = json.loads((ct2_dir / "config.json").read_text()) if (ct2_dir / "config.json").exists() else {}
    tok = WhisperTokenizerFast(tokenizer_file=str(ct2_dir / "tokenizer.json"))
    multilingual = dims["vocab_size"] >= 51865
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    no_ts = tok.convert_tokens_to_ids("<|notimestamps|>")
    config = WhisperConfig(
        **dims,
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
    )
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # proj_out is tied to the decoder embeddings; nothing else may be missing.
    missing = [m for m in missing if m != "proj_out.weight"]
    if missing or unexpected:
        raise ModelSpecError(f"{ct2_dir}: conversion mismatch, missing={missing} unexpected={unexpected}")
    model.tie_weights()
    gen = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        max_length=dims["max_target_positions"],
        suppress_tokens=extra.get("suppress_ids", []),
        begin_suppress_tokens=extra.get("suppress_ids_begin", [220, eot]),
        no_timestamps_token_id=no_ts,
        is_multilingual=multilingual,
        alignment_heads=extra.get("alignment_heads"),
        forced_decoder_ids=None,
        return_timestamps=False,
    )
    if multilingual:
        gen.lang_to_id = {tok.convert_ids_to_tokens(i): i for i in extra.get("lang_ids", [])}
        gen.task_to_id = {"transcribe": tok.convert_tokens_to_ids("<|transcribe|>"),
                          "translate": tok.convert_tokens_to_ids("<|translate|>")}
    model.generation_config = gen
    model.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=dims["num_mel_bins"]).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
