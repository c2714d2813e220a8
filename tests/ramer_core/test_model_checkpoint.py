"""save_pretrained / from_pretrained: identical outputs, JSON + safetensors only, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from model_builders import forward_and_loss, party_batch, single_batch, tiny_config, train_steps
from safetensors import safe_open

from ramer_core.errors import RamerInputError
from ramer_core.model import RamerModel


def _trained(config):
    torch.manual_seed(0)
    model = RamerModel(config)
    batches = [single_batch(config, seed=step) if not config.personality_dim else party_batch(config, seed=step)
               for step in range(2)]
    return train_steps(model, batches).eval()


@pytest.mark.parametrize("personality_dim", [0, 10])
def test_round_trip_gives_identical_outputs(tmp_path, personality_dim):
    config = tiny_config(personality_dim=personality_dim, threshold=0.35)
    model = _trained(config)
    batch = single_batch(config) if not personality_dim else party_batch(config)
    card = {"training_data": "unit test", "metrics": {"micro_f1": 0.5}}
    model.save_pretrained(tmp_path / "ckpt", card=card)
    loaded = RamerModel.from_pretrained(tmp_path / "ckpt")
    assert not loaded.training
    with torch.no_grad():
        (expected, expected_loss), (got, got_loss) = forward_and_loss(model, batch), forward_and_loss(loaded, batch)
    assert torch.equal(expected.probs, got.probs)
    assert expected_loss.terms.keys() == got_loss.terms.keys()
    assert all(torch.equal(expected_loss.terms[k], got_loss.terms[k]) for k in expected_loss.terms)
    assert loaded.card == card and loaded.config == model.config
    assert torch.equal(loaded.queue, model.queue) and torch.equal(loaded.prototypes, model.prototypes)
    document = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert document["config"]["label_names"] == ["a", "b", "c", "d"]
    assert document["config"]["threshold"] == 0.35 and document["config"]["text_dim"] == 12
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), framework="pt") as weights:
        assert set(weights.keys()) == set(model.state_dict())


def test_loading_never_unpickles(tmp_path):
    config = tiny_config()
    model = _trained(config)
    model.save_pretrained(tmp_path)
    # a pickle in place of the weights is refused, not executed
    torch.save(model.state_dict(), tmp_path / "model.safetensors")
    with pytest.raises(RamerInputError, match="safetensors"):
        RamerModel.from_pretrained(tmp_path)


def test_bad_checkpoints_raise_clear_errors(tmp_path):
    with pytest.raises(RamerInputError, match="config.json"):
        RamerModel.from_pretrained(tmp_path / "missing")
    config = tiny_config()
    _trained(config).save_pretrained(tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    document["config"]["hidden_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(RamerInputError, match="wrong shape"):
        RamerModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(RamerInputError, match="not valid JSON"):
        RamerModel.from_pretrained(tmp_path)


def test_a_failed_save_keeps_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    import ramer_core.checkpoint as checkpoint
    from ramer_core.errors import RamerInputError

    config = tiny_config()
    torch.manual_seed(0)
    first = RamerModel(config)
    first.save_pretrained(tmp_path / "ckpt", card={"version": 1})
    second = RamerModel(config)

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(RamerInputError, match="No space left"):
        second.save_pretrained(tmp_path / "ckpt", card={"version": 2})
    loaded = RamerModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.card == {"version": 1}
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), first.state_dict().values(), strict=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no staging or backup left behind


def test_companion_files_travel_with_the_checkpoint(tmp_path):
    model = RamerModel(tiny_config())
    companion = tmp_path / "layers.bin"
    companion.write_bytes(b"tuned blocks")
    model.save_pretrained(tmp_path / "ckpt", companions={"text_layers.safetensors": companion})
    assert (tmp_path / "ckpt" / "text_layers.safetensors").read_bytes() == b"tuned blocks"
    model.save_pretrained(tmp_path / "ckpt")          # saved again without it: the folder is replaced whole
    assert not (tmp_path / "ckpt" / "text_layers.safetensors").exists()
    for name, source in (("../escape", companion), ("config.json", companion), ("x.safetensors", tmp_path / "none")):
        with pytest.raises(RamerInputError, match="companion"):
            model.save_pretrained(tmp_path / "other", companions={name: source})
    assert not (tmp_path / "other").exists()
