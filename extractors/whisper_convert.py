"""Convert a CTranslate2 Whisper folder (what faster-whisper runs) into an openai-whisper checkpoint.

Both hold the same network. CTranslate2 stores it in ``model.bin`` (a flat list of named arrays,
format version 6) with the self-attention q/k/v fused into one matrix and the cross-attention k/v
fused into another; Whisper's key projection has no bias, so the fused bias holds zeros there.
``config.json`` carries the alignment heads (the cross-attention heads that track time) that
openai-whisper needs for ``word_timestamps``.

The checkpoint is a dict of plain tensors, ints and lists (``dims``, ``model_state_dict``,
``alignment_heads``), so it loads with ``torch.load(weights_only=True)`` and with
``whisper.load_model(path)``; `load_openai_whisper` also applies the alignment heads.

    python -m extractors.whisper_convert <ct2 folder> <out.pt>
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import torch

from extractors.errors import ModelNotFoundError
from extractors.io import write_atomically

log = logging.getLogger(__name__)

# DataType enum of include/ctranslate2/types.h
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BFLOAT16 = 5
_SUPPORTED_BINARY_VERSIONS = (5, 6)


def read_ct2_model(path: str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, {variable name: array}) of a CTranslate2 ``model.bin``; aliases are resolved."""
    path = Path(path)
    with open(path, "rb") as f:
        def unpack(fmt: str):
            return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            return f.read(unpack("H"))[:-1].decode("utf-8")

        version = unpack("I")
        if version not in _SUPPORTED_BINARY_VERSIONS:
            raise ModelNotFoundError(f"{path}: CTranslate2 binary version {version} is not supported "
                                     f"(expected one of {_SUPPORTED_BINARY_VERSIONS})")
        spec_name = string()
        unpack("I")  # spec revision
        variables: dict[str, np.ndarray] = {}
        for _ in range(unpack("I")):
            name = string()
            shape = [unpack("I") for _ in range(unpack("B"))]
            dtype_id = unpack("B")
            data = f.read(unpack("I"))
            if dtype_id == _CT2_BFLOAT16:  # upper half of float32
                raw = np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16
                array = raw.view(np.float32)
            elif dtype_id in _CT2_DTYPES:
                array = np.frombuffer(data, dtype=_CT2_DTYPES[dtype_id])
            else:
                raise ModelNotFoundError(f"{path}: unknown CTranslate2 data type {dtype_id} for {name}")
            variables[name] = array.reshape(shape)
        for _ in range(unpack("I")):
            alias, target = string(), string()
            variables[alias] = variables[target]
    return spec_name, variables


def _layer_count(variables: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)/")
    return 1 + max(int(m.group(1)) for m in map(pattern.match, variables) if m)


def _weights(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    """Float weights; int8 matrices are dequantised with their per-row ``weight_scale``."""
    array = variables[name]
    if array.dtype == np.int8:
        scale = variables[name.replace("/weight", "/weight_scale")].astype(np.float32)
        return array.astype(np.float32) / scale[:, None]
    return array.astype(np.float32)


def ct2_to_openai_state(variables: dict[str, np.ndarray]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(ModelDimensions as dict, openai-whisper state dict) from CTranslate2 Whisper variables."""
    state: dict[str, torch.Tensor] = {}

    def put(name: str, array: np.ndarray) -> None:
        state[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).half()

    def linear(dst: str, src: str, bias: bool = True) -> None:
        put(f"{dst}.weight", _weights(variables, f"{src}/weight"))
        if bias:
            put(f"{dst}.bias", variables[f"{src}/bias"])

    def layer_norm(dst: str, src: str) -> None:
        put(f"{dst}.weight", variables[f"{src}/gamma"])
        put(f"{dst}.bias", variables[f"{src}/beta"])

    def split(dst_names: list[str], src: str, biased: list[bool]) -> None:
        """A fused [n*D, D] projection into n [D, D] ones; key projections carry no bias."""
        weight = _weights(variables, f"{src}/weight")
        bias = variables[f"{src}/bias"].astype(np.float32)
        parts = len(dst_names)
        for dst, w, b, has_bias in zip(dst_names, np.split(weight, parts), np.split(bias, parts), biased,
                                       strict=True):
            put(f"{dst}.weight", w)
            if has_bias:
                put(f"{dst}.bias", b)
            elif np.abs(b).max() > 1e-6:
                log.warning("%s: dropping a non-zero key bias (max %.2e)", src, np.abs(b).max())

    n_audio_layer = _layer_count(variables, "encoder/layer_")
    n_text_layer = _layer_count(variables, "decoder/layer_")
    conv1 = variables["encoder/conv1/weight"]                    # [D, n_mels, 3]
    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": int(variables["encoder/num_heads"]),
        "n_audio_layer": n_audio_layer,
        "n_vocab": int(variables["decoder/embeddings/weight"].shape[0]),
        "n_text_ctx": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(variables["decoder/embeddings/weight"].shape[1]),
        "n_text_head": int(variables["decoder/num_heads"]),
        "n_text_layer": n_text_layer,
    }

    for conv in ("conv1", "conv2"):
        linear(f"encoder.{conv}", f"encoder/{conv}")
    put("encoder.positional_embedding", variables["encoder/position_encodings/encodings"])
    def self_attention(dst: str, src: str) -> None:
        layer_norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        split([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"],
              f"{src}/self_attention/linear_0", [True, False, True])
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")

    def feed_forward(dst: str, src: str) -> None:
        layer_norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    for i in range(n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        self_attention(dst, src)
        feed_forward(dst, src)
    layer_norm("encoder.ln_post", "encoder/layer_norm")

    put("decoder.token_embedding.weight", _weights(variables, "decoder/embeddings/weight"))
    put("decoder.positional_embedding", variables["decoder/position_encodings/encodings"])
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        self_attention(dst, src)
        layer_norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
        split([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"],
              f"{src}/attention/linear_1", [False, True])
        linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
        feed_forward(dst, src)
    layer_norm("decoder.ln", "decoder/layer_norm")
    return dims, state


def convert_ct2_to_openai_whisper(ct2_dir: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Writes an openai-whisper checkpoint for the CTranslate2 folder `ct2_dir`; returns its path.

    The file is written beside `output` and renamed, so a failed conversion leaves nothing behind.
    """
    ct2_dir, output = Path(ct2_dir), Path(output)
    if not (ct2_dir / "model.bin").is_file():
        raise ModelNotFoundError(f"{ct2_dir} is not a CTranslate2 Whisper folder (no model.bin)")
    spec_name, variables = read_ct2_model(ct2_dir / "model.bin")
    if spec_name != "WhisperSpec":
        raise ModelNotFoundError(f"{ct2_dir}/model.bin holds a {spec_name}, not a Whisper model")
    dims, state = ct2_to_openai_state(variables)
    config_path = ct2_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    heads = [[int(layer), int(head)] for layer, head in config.get("alignment_heads") or []]
    if not heads:  # openai-whisper's own default: every head of the second half of the decoder
        heads = [[layer, head] for layer in range(dims["n_text_layer"] // 2, dims["n_text_layer"])
                 for head in range(dims["n_text_head"])]
        log.warning("%s has no alignment heads; word timestamps will be coarser", config_path)
    checkpoint = {"dims": dims, "model_state_dict": state, "alignment_heads": heads}
    write_atomically(output, lambda temporary: torch.save(checkpoint, temporary))
    log.info("wrote openai-whisper checkpoint %s (%d tensors, dims %s)", output, len(state), dims)
    return output


def load_openai_whisper(path: str | os.PathLike, device: str = "cpu"):
    """openai-whisper model from a checkpoint, with its alignment heads (no pickled code is run)."""
    import whisper
    from whisper.model import ModelDimensions, Whisper

    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model = Whisper(ModelDimensions(**checkpoint["dims"]))
        model.load_state_dict(checkpoint["model_state_dict"])
    except (RuntimeError, KeyError, TypeError, OSError, pickle.UnpicklingError) as error:
        raise ModelNotFoundError(f"{path} is not a usable openai-whisper checkpoint ({error}); "
                                 "convert one with python -m extractors.whisper_convert") from error
    heads = checkpoint.get("alignment_heads")
    if heads:
        mask = torch.zeros(model.dims.n_text_layer, model.dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[layer, head] = True
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    elif path.stem in whisper._ALIGNMENT_HEADS:  # an original OpenAI file named tiny.en.pt, base.pt, ...
        model.set_alignment_heads(whisper._ALIGNMENT_HEADS[path.stem])
    return model.to(device).eval()



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("ct2_dir", type=Path, help="CTranslate2 Whisper folder (model.bin, config.json)")
    parser.add_argument("output", type=Path, help="checkpoint to write (.pt)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_ct2_to_openai_whisper(args.ct2_dir, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
