"""Training and evaluation of a RAMer model on RamerDatasets.

- AdamW (lr 5e-5, weight decay 0.01 on weights only), linear warm-up over the first 10 % of the
  steps then linear decay to 0, gradient clipping at norm 1.0, batch 64, seed 42 (DESIGN.md).
- One step: ``out = model(batch)``, ``model.loss(out, labels).total`` backward, clip, optimiser step,
  then ``model.update_state(out, labels)`` only when the step happened (a non-finite loss or
  gradient, or a step the fp16 GradScaler skips, stores nothing in the queue or the prototypes).
- Model selection: after every epoch the decision threshold is searched on validation
  (:func:`ramer_core.metrics.search_threshold`), and the epoch with the best validation micro-F1
  at its threshold is kept (its weights *and* buffers: prototypes, contrastive queue).
- Determinism: one seed sets Python, numpy and torch, the data order (a seeded generator) and the
  model's stack-shuffle generator; on CPU the same seed gives the same metrics.
- Mixed precision (bf16, or fp16 with a gradient scaler) only on CUDA; CPU runs in float32.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ramer_core.datasets.common import RamerDataset, collate
from ramer_core.errors import RamerInputError
from ramer_core.metrics import ThresholdChoice, binarize, multilabel_metrics, search_threshold

log = logging.getLogger(__name__)

ProgressHook = Callable[[dict], None]


@dataclass
class TrainingConfig:
    epochs: int = 20
    batch_size: int = 64
    eval_batch_size: int = 256
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1        # share of all steps with a linear warm-up
    max_grad_norm: float = 1.0
    seed: int = 42
    mixed_precision: str = "bf16"    # "bf16", "fp16" or "none"; used on CUDA only
    threshold_search: str = "global"  # "global", "per_label" or "none" (keep the model's threshold)
    patience: int | None = None      # stop after this many epochs without a better validation micro-F1
    deterministic: bool = True       # deterministic kernels on CPU (same seed -> same weights, bit for bit)
    device: str | None = None        # None: CUDA when available, else CPU
    sampling: str = "shuffle"        # "shuffle", or "class_balanced" (MEmoR's WeightedRandomSampler, see below)

    def __post_init__(self) -> None:
        if self.mixed_precision not in ("bf16", "fp16", "none"):
            raise RamerInputError(f"mixed_precision must be bf16, fp16 or none, not {self.mixed_precision!r}")
        if self.threshold_search not in ("global", "per_label", "none"):
            raise RamerInputError(f"threshold_search must be global, per_label or none, not {self.threshold_search!r}")
        if self.sampling not in ("shuffle", "class_balanced"):
            raise RamerInputError(f"sampling must be shuffle or class_balanced, not {self.sampling!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise RamerInputError("epochs and batch_size must be at least 1")


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    valid_loss: float
    valid_micro_f1: float
    threshold: float
    seconds: float


@dataclass
class TrainingResult:
    best_epoch: int
    threshold: ThresholdChoice
    valid_metrics: dict[str, float]
    history: list[EpochRecord] = field(default_factory=list)
    seconds: float = 0.0

    def serialize(self) -> dict:
        return {"best_epoch": self.best_epoch, "threshold": self.threshold.serialize(),
                "valid_metrics": self.valid_metrics, "history": [asdict(h) for h in self.history],
                "seconds": self.seconds}


@dataclass
class Predictions:
    probs: np.ndarray               # [N, C]
    labels: np.ndarray | None       # [N, C] multi-hot, None for unlabelled data
    missing_acoustic_and_text: np.ndarray  # [N] bool
    loss: float = float("nan")      # mean validation loss (labelled data only)


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def warmup_linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float):
    """Linear warm-up from 0 over ``warmup_ratio`` of the steps, then linear decay to 0."""
    warmup = max(1, int(round(total_steps * warmup_ratio))) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _autocast(device: torch.device, mixed_precision: str):
    if device.type != "cuda" or mixed_precision == "none":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if mixed_precision == "bf16" and torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    if hasattr(model, "param_groups"):
        return model.param_groups(weight_decay=weight_decay)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]


def _check_compatible(model: torch.nn.Module, dataset: RamerDataset) -> None:
    config = getattr(model, "config", None)
    if config is None:
        return
    dims = dataset.dims
    got = (dims.text, dims.visual, dims.acoustic)
    want = (config.text_dim, config.visual_dim, config.acoustic_dim)
    if got != want:
        raise RamerInputError(f"{dataset.source or dataset.name}: feature sizes (text, visual, acoustic) {got} "
                              f"do not match the model's {want}")
    if len(dataset.label_names) != config.num_labels:
        raise RamerInputError(f"{dataset.source or dataset.name}: {len(dataset.label_names)} labels, "
                              f"the model has {config.num_labels}")


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: RamerDataset, batch_size: int = 256,
            device: torch.device | str | None = None, mixed_precision: str = "none") -> Predictions:
    """Probabilities for every sample (model in eval mode; no state changes)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    probs, losses, weights = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    for batch in loader:
        batch = batch.to(device)
        with _autocast(device, mixed_precision):
            out = model(batch)
            loss = model.loss(out, batch.labels).total if batch.labels is not None and hasattr(model, "loss") else None
        probs.append(out.probs.float().cpu())
        if loss is not None:
            losses.append(float(loss))
            weights.append(batch.batch_size)
    model.train(was_training)
    num_labels = len(dataset.label_names)
    probs_array = torch.cat(probs).numpy() if probs else np.zeros((0, num_labels), dtype=np.float32)
    labels = dataset.labels_matrix().numpy() if dataset.labelled else None
    loss = float(np.average(losses, weights=weights)) if losses else float("nan")
    return Predictions(probs_array, labels, dataset.missing_acoustic_and_text().numpy(), loss)


def score(predictions: Predictions, threshold: float | np.ndarray | list[float]) -> dict[str, dict[str, float]]:
    """Metrics overall, on the samples missing acoustic+text, and on the samples with them."""
    if predictions.labels is None:
        raise RamerInputError("cannot score predictions without labels")
    pred = binarize(predictions.probs, threshold)
    report = {}
    for name, mask in (("overall", np.ones(len(pred), dtype=bool)),
                       ("missing_acoustic_text", predictions.missing_acoustic_and_text),
                       ("with_acoustic_text", ~predictions.missing_acoustic_and_text)):
        metrics = multilabel_metrics(predictions.labels[mask], pred[mask])
        metrics["samples"] = int(mask.sum())
        report[name] = metrics
    return report


def model_thresholds(model: torch.nn.Module) -> float | list[float]:
    """The decision threshold(s) a model carries: per-label ones from its card, else config.threshold."""
    card = getattr(model, "card", None) or {}
    per_label = card.get("thresholds")
    if per_label:
        return [float(t) for t in per_label]
    return float(getattr(getattr(model, "config", None), "threshold", 0.5))


def evaluate(model: torch.nn.Module, dataset: RamerDataset, threshold: float | list[float] | None = None,
             batch_size: int = 256, device: torch.device | str | None = None) -> dict:
    """Score ``dataset`` at the model's threshold (or the given one): overall and per presence group."""
    _check_compatible(model, dataset)
    if not dataset.labelled:
        raise RamerInputError(f"{dataset.source or dataset.name}: evaluation needs labelled samples")
    threshold = model_thresholds(model) if threshold is None else threshold
    predictions = predict(model, dataset, batch_size=batch_size, device=device)
    report = score(predictions, threshold)
    report["threshold"] = threshold
    report["loss"] = predictions.loss
    return report


def train(model: torch.nn.Module, train_set: RamerDataset, valid_set: RamerDataset,
          config: TrainingConfig | None = None, progress: ProgressHook | None = None) -> TrainingResult:
    """Train in place; on return the model holds the best epoch's state and threshold."""
    config = config or TrainingConfig()
    deterministic = config.deterministic and pick_device(config.device).type == "cpu"
    previous = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if deterministic:
        # Some CPU backward kernels accumulate in a thread-dependent order; the deterministic
        # variants make a seed reproduce the same weights exactly.
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(model, train_set, valid_set, config, progress)
    finally:
        if deterministic:
            torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])


def _train(model: torch.nn.Module, train_set: RamerDataset, valid_set: RamerDataset, config: TrainingConfig,
           progress: ProgressHook | None) -> TrainingResult:
    for dataset in (train_set, valid_set):
        _check_compatible(model, dataset)
        if not dataset.labelled or len(dataset) == 0:
            raise RamerInputError(f"{dataset.source or dataset.name}: training needs labelled, non-empty "
                                  f"train and valid splits")
    device = pick_device(config.device)
    seed_everything(config.seed)
    if hasattr(model, "reseed"):
        model.reseed(config.seed)
    model.to(device)
    generator = torch.Generator().manual_seed(config.seed)
    sampler = class_balanced_sampler(train_set, generator) if config.sampling == "class_balanced" else None
    loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=sampler is None, sampler=sampler,
                        collate_fn=collate, generator=generator if sampler is None else None,
                        drop_last=len(train_set) > config.batch_size)
    total_steps = config.epochs * len(loader)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    scheduler = warmup_linear_schedule(optimizer, total_steps, config.warmup_ratio)
    use_scaler = device.type == "cuda" and config.mixed_precision == "fp16"
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    log.info("training on %s: %d samples, %d epochs x %d steps, device %s", train_set.name, len(train_set),
             config.epochs, len(loader), device)

    best: tuple[float, int, dict, ThresholdChoice, dict] | None = None
    history: list[EpochRecord] = []
    started = time.perf_counter()
    step = 0
    stale = 0
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        model.train()
        running, seen = 0.0, 0
        for batch in loader:
            batch = batch.to(device)
            with _autocast(device, config.mixed_precision):
                out = model(batch)
                loss = model.loss(out, batch.labels).total
            stepped = False
            if torch.isfinite(loss):
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                scale_before = scaler.get_scale() if use_scaler else None
                if use_scaler:
                    scaler.step(optimizer)  # skips the step itself when a gradient is inf/NaN
                    scaler.update()
                    stepped = scaler.get_scale() >= scale_before  # the scale drops exactly when it skipped
                elif torch.isfinite(grad_norm):
                    optimizer.step()
                    stepped = True
            if not stepped:
                log.warning("epoch %d step %d: non-finite loss or gradient (loss %s), step skipped",
                            epoch, step, float(loss))
                optimizer.zero_grad(set_to_none=True)
            else:
                # queue, prototypes and shuffle step move only after a step that really happened
                model.update_state(out, batch.labels)
                running += loss.item() * batch.batch_size
                seen += batch.batch_size
            scheduler.step()
            step += 1
            if progress is not None:
                progress({"stage": "step", "epoch": epoch, "step": step, "total_steps": total_steps,
                          "loss": loss.item()})
        predictions = predict(model, valid_set, config.eval_batch_size, device, config.mixed_precision)
        choice = _choose_threshold(model, predictions, config.threshold_search)
        valid_f1 = choice.micro_f1
        record = EpochRecord(epoch, running / max(1, seen), predictions.loss, valid_f1, choice.global_threshold,
                             time.perf_counter() - epoch_start)
        history.append(record)
        log.info("epoch %d: train loss %.4f, valid loss %.4f, valid micro-F1 %.4f (threshold %.2f)",
                 epoch, record.train_loss, record.valid_loss, valid_f1, choice.global_threshold)
        if progress is not None:
            progress({"stage": "epoch", **asdict(record), "total_epochs": config.epochs})
        if best is None or valid_f1 > best[0] + 1e-12:
            metrics = score(predictions, list(choice.thresholds))["overall"]
            best = (valid_f1, epoch, copy.deepcopy(model.state_dict()), choice, metrics)
            stale = 0
        else:
            stale += 1
            if config.patience is not None and stale >= config.patience:
                log.info("no better validation micro-F1 for %d epochs; stopping", stale)
                break
    assert best is not None
    _, best_epoch, state, choice, metrics = best
    model.load_state_dict(state)
    if config.threshold_search != "none" and hasattr(model, "config"):
        model.config.threshold = choice.global_threshold
    if config.threshold_search == "per_label":  # carried by the model, so evaluate() uses them at once
        model.card = {**(getattr(model, "card", None) or {}), "thresholds": list(choice.thresholds)}
    result = TrainingResult(best_epoch, choice, metrics, history, time.perf_counter() - started)
    log.info("best epoch %d: valid micro-F1 %.4f", best_epoch, choice.micro_f1)
    return result


def class_balanced_sampler(dataset: RamerDataset, generator: torch.Generator) -> torch.utils.data.WeightedRandomSampler:
    """MEmoR's training sampler (``data_loader/data_loaders.py``): draw len(dataset) samples with
    replacement, each with weight 1 / (count of its label). A merged multi-label sample takes the mean
    of its labels' weights (one label: exactly MEmoR's); a sample without labels the rarest weight."""
    labels = dataset.labels_matrix()                                             # [N, C]
    inverse = 1.0 / labels.sum(dim=0).clamp_min(1.0)                             # [C]
    count = labels.sum(dim=1)
    weights = torch.where(count > 0, (labels * inverse).sum(dim=1) / count.clamp_min(1.0), inverse.max())
    return torch.utils.data.WeightedRandomSampler(weights.double(), len(dataset), replacement=True, generator=generator)


def _choose_threshold(model: torch.nn.Module, predictions: Predictions, mode: str) -> ThresholdChoice:
    if mode == "none":
        threshold = float(getattr(getattr(model, "config", None), "threshold", 0.5))
        f1 = score(predictions, threshold)["overall"]["micro_f1"]
        return ThresholdChoice((threshold,) * predictions.probs.shape[1], threshold, f1)
    return search_threshold(predictions.probs, predictions.labels, per_label=mode == "per_label")


def save_trained(model: torch.nn.Module, directory: str | Path, result: TrainingResult, train_set: RamerDataset,
                 valid_set: RamerDataset, config: TrainingConfig, test_report: dict | None = None) -> Path:
    """Save through the model's ``save_pretrained`` with a model card: data, training, metrics, thresholds."""
    card = {
        "training_data": {"train": train_set.describe(), "valid": valid_set.describe()},
        "training": asdict(config),
        "result": result.serialize(),
        "thresholds": list(result.threshold.thresholds) if config.threshold_search == "per_label" else None,
        "metrics": {"valid": result.valid_metrics, **({"test": test_report} if test_report else {})},
        "torch_version": torch.__version__,
    }
    directory = Path(directory)
    model.save_pretrained(directory, card=json_safe(card))
    return directory


def json_safe(value):
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
