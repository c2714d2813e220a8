"""`python -m pipeline train` and `evaluate` end to end on a small feature store, and their errors."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.cli import main
from ramer_core.datasets import FeatureDims, FeatureStoreWriter, SyntheticConfig, make_synthetic

SMALL_MODEL = ["--hidden-size", "32", "--layers", "1", "--heads", "4", "--queue-size", "256"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A labelled feature store holding a small synthetic benchmark, as the pipeline would write it."""
    cfg = SyntheticConfig(train_samples=96, valid_samples=32, test_samples=48, seed=7)
    data = make_synthetic(cfg)
    folder = tmp_path_factory.mktemp("fs") / "store"
    with FeatureStoreWriter(folder, FeatureDims(cfg.text_dim, cfg.visual_dim, cfg.acoustic_dim, cfg.personality_dim),
                            cfg.label_names) as writer:
        for split in ("train", "valid", "test"):
            for i, s in enumerate(data.split(split)):
                names = [n for n, y in zip(cfg.label_names, s.labels.tolist(), strict=True) if y]
                writer.add(f"{split}{i}", "C0", s.text[0, 0], s.visual[0, 0], s.acoustic[0, 0], labels=names,
                           personality=s.personality[0], split=split)
    return folder


def test_train_then_evaluate(store, tmp_path, capsys):
    out = tmp_path / "ckpt"
    code = main(["-q", "train", "--dataset", "feature-store", str(store), "--out", str(out), "--epochs", "2", "--batch-size", "48",
                 "--lr", "2e-3", "--seed", "1", *SMALL_MODEL])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    card = config["card"]
    assert card["training_data"]["train"]["samples"] == 96
    assert card["training"]["learning_rate"] == 2e-3 and card["training"]["seed"] == 1
    test_f1 = card["metrics"]["test"]["overall"]["micro_f1"]
    assert 0.0 <= test_f1 <= 1.0
    assert config["config"]["threshold"] == card["result"]["threshold"]["global_threshold"]

    report = tmp_path / "metrics.json"
    code = main(["-q", "evaluate", "--checkpoint", str(out), "--dataset", "feature-store", str(store),
                 "--json", str(report)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| overall | 48 |" in printed and "missing_acoustic_text" in printed
    metrics = json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"not valid JSON: {c}"))
    # evaluating the saved checkpoint reproduces the test metrics recorded at training time
    assert metrics["overall"]["micro_f1"] == pytest.approx(test_f1)
    assert metrics["threshold"] == config["config"]["threshold"]

    # a late-fusion baseline and an ablation train through the same command
    code = main(["-q", "train", "--dataset", "feature-store", str(store), "--out", str(tmp_path / "base"),
                 "--epochs", "1", "--batch-size", "48", "--baseline", "late-fusion", *SMALL_MODEL])
    assert code == 0
    assert json.loads((tmp_path / "base" / "config.json").read_text())["config"]["use_reconstruction"] is False


def test_user_errors_exit_2_with_a_message(store, tmp_path, capsys):
    assert main(["train", "--dataset", "mosei-aligned", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["train", "--dataset", "nonsense", "x", "--out", str(tmp_path / "o")]) == 2
    assert "unknown dataset kind" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    assert main(["train", "--dataset", "feature-store", str(store), "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(tmp_path / "none"), "--dataset", "feature-store", str(store)]) == 2
    assert "checkpoint folder not found" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    torch.save({"train": {}}, bad)
    assert main(["train", "--dataset", "mosei-aligned", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert "lacks src-text" in capsys.readouterr().err


def test_output_that_cannot_be_written_fails_before_training(store, tmp_path, capsys):
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    assert main(["train", "--dataset", "feature-store", str(store), "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["train", "--dataset", "feature-store", str(store), "--out", str(a_file / "sub")]) == 2
    assert "not a writable folder" in capsys.readouterr().err


def test_evaluate_uses_the_training_seed_for_synthetic_data(tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main(["-q", "train", "--dataset", "synthetic", "--out", str(out), "--epochs", "1", "--seed", "7",
                 "--batch-size", "256", *SMALL_MODEL]) == 0
    test_f1 = json.loads((out / "config.json").read_text())["card"]["metrics"]["test"]["overall"]["micro_f1"]
    report = tmp_path / "m.json"
    assert main(["-q", "evaluate", "--checkpoint", str(out), "--dataset", "synthetic", "--json", str(report)]) == 0
    assert json.loads(report.read_text())["overall"]["micro_f1"] == pytest.approx(test_f1)


def test_presets_set_the_public_code_settings_and_explicit_options_win():
    import argparse

    from pipeline.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.register(parser.add_subparsers())

    def resolved(*argv):
        args = parser.parse_args(["train", "--dataset", "synthetic", "--out", "x", *argv])
        return train_command.apply_preset(args, args.parser_defaults)

    m3ed = resolved("--preset", "m3ed-paper", "--epochs", "3")
    assert m3ed.epochs == 3 and m3ed.seed == 1  # explicit epochs win, the rest comes from the preset
    assert (m3ed.text_layers, m3ed.visual_layers, m3ed.acoustic_layers) == (6, 4, 4)
    assert m3ed.threshold == 0.25 and m3ed.threshold_search == "none" and m3ed.lr == 5e-5
    memor = resolved("--preset", "memor-paper")
    assert memor.epochs == 150 and memor.sampling == "class_balanced" and memor.text_layers == 3
    plain = resolved()
    assert plain.epochs == 20 and plain.threshold is None and plain.sampling == "shuffle"
    splits = make_synthetic(SyntheticConfig(train_samples=8, valid_samples=4, test_samples=4))
    config = train_command.build_config(m3ed, splits)
    assert config.layers == (6, 4, 4) and config.threshold == 0.25
