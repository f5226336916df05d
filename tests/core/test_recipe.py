"""Tests of custom_components.core.recipe: checkpoints that carry their network settings and geometry."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from ignite.engine import Engine

from custom_components.core.recipe import (
    CheckedCheckpointLoader,
    MOVED_NETWORKS,
    CheckpointMismatchError,
    RecipeError,
    RecipeMismatchError,
    RecipeSaver,
    check_recipe,
    describe_mismatch,
    load_pretrained,
    read_recipe,
    recipe_path,
    started_from,
    trained_settings,
    weights_sha256,
    write_recipe,
)
from custom_components.oct.transunet import TransUNet

NARROW = dict(filters=(4, 8, 16), embed_dim=8, num_heads=2, mlp_dim=16, img_size=(16, 16))


def test_recipe_path_sits_beside_the_checkpoint():
    assert recipe_path("/m/models/model.pt") == "/m/models/model.recipe.json"
    assert recipe_path("checkpoint.pth") == "checkpoint.recipe.json"


def test_write_and_read_round_trip(tmp_path):
    checkpoint = tmp_path / "model.pt"
    net = TransUNet(**NARROW)
    path = write_recipe(checkpoint, {"image_size": 16, "filters": (4, 8, 16), "geometry": "resize"}, net, {"version": "1"})
    assert path == str(tmp_path / "model.recipe.json")
    recipe = read_recipe(checkpoint)
    assert recipe["settings"] == {"image_size": 16, "filters": [4, 8, 16], "geometry": "resize"}  # JSON-ready
    assert recipe["network"] == "custom_components.oct.transunet.TransUNet"
    assert recipe["checkpoint"] == "model.pt" and recipe["bundle"] == {"version": "1"} and recipe["written"]
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_no_recipe_means_the_config_decides(tmp_path, caplog):
    checkpoint = tmp_path / "model.pt"
    assert read_recipe(checkpoint) == {"settings": {}}  # nothing trained yet: silent
    torch.save({}, checkpoint)
    with caplog.at_level(logging.WARNING):
        assert read_recipe(checkpoint) == {"settings": {}}
    assert "has no recipe" in caplog.text
    check_recipe(checkpoint, {"image_size": 99}, TransUNet(**NARROW))  # nothing to compare with


def test_unreadable_recipe_is_named(tmp_path):
    (tmp_path / "model.recipe.json").write_text("{not json")
    with pytest.raises(RecipeError, match="model.recipe.json: unreadable checkpoint recipe"):
        read_recipe(tmp_path / "model.pt")
    (tmp_path / "model.recipe.json").write_text(json.dumps({"settings": [1]}))
    with pytest.raises(RecipeError, match="'settings' object"):
        read_recipe(tmp_path / "model.pt")


def test_check_recipe_refuses_another_geometry_and_warns_on_other_settings(tmp_path, caplog):
    checkpoint = tmp_path / "model.pt"
    net = TransUNet(**NARROW)
    write_recipe(checkpoint, {"image_size": 16, "geometry": "resize", "filters": [4, 8, 16]}, net)
    check_recipe(checkpoint, {"image_size": 16, "geometry": "resize", "filters": (4, 8, 16), "other": 1}, net)
    with pytest.raises(RecipeMismatchError, match=r"trained with image_size=16, but this run sets image_size=32"):
        check_recipe(checkpoint, {"image_size": 32}, net)
    with pytest.raises(RecipeMismatchError, match=r"geometry='resize'.*geometry='native'"):
        check_recipe(checkpoint, {"geometry": "native"}, net)
    with caplog.at_level(logging.WARNING):
        check_recipe(checkpoint, {"filters": [8, 16, 32]}, net)
    assert "trained with filters=[4, 8, 16]; using [8, 16, 32] as set explicitly" in caplog.text
    with pytest.raises(RecipeMismatchError, match="holds a custom_components.oct.transunet.TransUNet, but this "
                       "config builds a torch.nn.modules.linear.Linear"):  # fmt: skip
        check_recipe(checkpoint, {}, torch.nn.Linear(2, 2))


def test_describe_mismatch_names_the_first_layer_and_both_shapes():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    assert describe_mismatch(net, net.state_dict()) is None
    other = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Linear(4, 1)).state_dict()
    assert describe_mismatch(net, other) == "0.weight: checkpoint (4, 2), network (3, 2) (first of 3 mismatched tensors)"
    missing = {k: v for k, v in net.state_dict().items() if k != "1.bias"}
    assert describe_mismatch(net, missing) == "1.bias: missing from the checkpoint (network (1,))"
    extra = {**net.state_dict(), "2.weight": torch.zeros(1)}
    assert describe_mismatch(net, extra) == "2.weight: in the checkpoint, not in the network"


def test_describe_mismatch_refuses_untied_weights_for_a_tied_network():
    """A network that shares one layer under two names (the IFE branches' attention with tie_attention) cannot
    load a checkpoint trained untied: load_state_dict would keep whichever name comes last."""
    shared = torch.nn.Linear(2, 2)
    tied = torch.nn.ModuleDict({"severe": shared, "mild": shared})
    assert describe_mismatch(tied, tied.state_dict()) is None  # trained tied: both names hold one tensor
    untied = torch.nn.ModuleDict({"severe": torch.nn.Linear(2, 2), "mild": torch.nn.Linear(2, 2)}).state_dict()
    assert describe_mismatch(tied, untied) == (
        "severe.weight and mild.weight: one tensor in the network (tied), two in the checkpoint (trained untied) "
        "(first of 2 mismatched tensors)"
    )
    # the other way round loads: an untied network takes the tied checkpoint's tensor twice
    assert describe_mismatch(torch.nn.ModuleDict({"severe": torch.nn.Linear(2, 2), "mild": torch.nn.Linear(2, 2)}),
                             tied.state_dict()) is None  # fmt: skip


def test_describe_mismatch_accepts_what_a_module_adapts_on_loading():
    trained = TransUNet(**NARROW).state_dict()  # position embedding for a 2 x 2 token grid
    assert describe_mismatch(TransUNet(**{**NARROW, "img_size": (64, 64)}), trained) is None
    wider = TransUNet(**{**NARROW, "filters": (8, 16, 32), "img_size": (64, 64)})
    assert describe_mismatch(wider, trained).startswith("encoder.0.0.conv.weight: checkpoint (4, 1, 3, 3)")


def test_recipe_saver_writes_when_the_checkpoint_is_written(tmp_path):
    checkpoint = str(tmp_path / "model.pt")
    torch.save({"old": torch.zeros(1)}, checkpoint)  # an earlier run's model: its recipe must not be replaced yet
    saver = RecipeSaver(checkpoint, {"image_size": 16}, torch.nn.Linear(1, 1))
    engine = Engine(lambda e, b: None)
    saver.attach(engine)
    engine.run([0])
    assert not os.path.exists(recipe_path(checkpoint))
    torch.save({"new": torch.zeros(1)}, checkpoint + ".tmp")
    os.replace(checkpoint + ".tmp", checkpoint)  # how the checkpoint saver writes
    engine.run([0])
    assert read_recipe(checkpoint)["settings"] == {"image_size": 16}
    os.remove(recipe_path(checkpoint))
    engine.run([0])  # the checkpoint did not change again: nothing rewritten
    assert not os.path.exists(recipe_path(checkpoint))


def _loader_engine():
    return Engine(lambda e, b: None)


def test_checked_loader_names_the_first_mismatched_layer(tmp_path):
    checkpoint = str(tmp_path / "model.pt")
    torch.save(TransUNet(**NARROW).state_dict(), checkpoint)
    wide = TransUNet(**{**NARROW, "filters": (8, 16, 32)})
    loader = CheckedCheckpointLoader(load_path=checkpoint, load_dict={"model": wide})
    with pytest.raises(CheckpointMismatchError) as err:
        loader(_loader_engine())
    message = str(err.value)
    assert message.startswith(f"{checkpoint} does not fit the network this config builds: encoder.0.0.conv.weight: ")
    assert "checkpoint (4, 1, 3, 3), network (8, 1, 3, 3)" in message
    assert "it has no model.recipe.json beside it" in message  # the likely cause
    assert err.value.__cause__ is None and err.value.__suppress_context__  # one error, not PyTorch's list
    write_recipe(checkpoint, {"image_size": 16})  # a recipe that does not cover what differs
    with pytest.raises(CheckpointMismatchError, match="does not cover a setting it was trained with"):
        loader(_loader_engine())


def test_checked_loader_refuses_untied_weights_for_a_tied_network_and_loads_tied_ones(tmp_path):
    """load_state_dict raises nothing when untied weights go into tied layers (the last name wins): the loader looks
    first. Tied weights load, NaNs included (they are one tensor, not two that differ)."""
    checkpoint = str(tmp_path / "model.pt")
    shared = torch.nn.Linear(2, 2)
    tied = torch.nn.ModuleDict({"severe": shared, "mild": shared})
    torch.save(torch.nn.ModuleDict({"severe": torch.nn.Linear(2, 2), "mild": torch.nn.Linear(2, 2)}).state_dict(),
               checkpoint)  # fmt: skip
    with pytest.raises(CheckpointMismatchError, match="severe.weight and mild.weight: one tensor in the network"):
        CheckedCheckpointLoader(load_path=checkpoint, load_dict={"model": tied})(_loader_engine())
    with torch.no_grad():
        shared.weight[0, 0] = float("nan")
    torch.save(tied.state_dict(), checkpoint)
    CheckedCheckpointLoader(load_path=checkpoint, load_dict={"model": tied})(_loader_engine())


def test_checked_loader_loads_a_fitting_checkpoint_of_another_size(tmp_path):
    checkpoint = str(tmp_path / "model.pt")
    trained = TransUNet(**NARROW)
    torch.save(trained.state_dict(), checkpoint)
    bigger = TransUNet(**{**NARROW, "img_size": (32, 32)})  # the position embedding is resized on load
    CheckedCheckpointLoader(load_path=checkpoint, load_dict={"model": bigger})(_loader_engine())
    torch.testing.assert_close(bigger.encoder[0][0].conv.weight, trained.encoder[0][0].conv.weight)


def test_checked_loader_names_the_mismatch_inside_a_training_state(tmp_path):
    checkpoint = str(tmp_path / "checkpoint.pt")
    net = TransUNet(**NARROW)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict()}, checkpoint)
    wide = TransUNet(**{**NARROW, "filters": (8, 16, 32)})
    loader = CheckedCheckpointLoader(
        load_path=checkpoint, load_dict={"model": wide, "optimizer": torch.optim.SGD(wide.parameters(), lr=0.1)}
    )
    with pytest.raises(CheckpointMismatchError, match=r"encoder\.0\.0\.conv\.weight: checkpoint \(4, 1, 3, 3\)"):
        loader(_loader_engine())
    # a training state without an object this config restores (another version's) is named, not a KeyError
    rng = torch.nn.Module()  # any object with load_state_dict
    loader = CheckedCheckpointLoader(load_path=checkpoint, load_dict={"model": net, "random_states": rng})
    with pytest.raises(CheckpointMismatchError, match="holds model, optimizer but not random_states"):
        loader(_loader_engine())
    # unless it is optional (added to the training state by a later version): restored when present, else skipped
    restored = TransUNet(**NARROW)
    loader = CheckedCheckpointLoader(
        load_path=checkpoint, load_dict={"model": restored, "random_states": rng}, optional=["random_states"]
    )
    loader(_loader_engine())
    torch.testing.assert_close(restored.encoder[0][0].conv.weight, net.encoder[0][0].conv.weight)
    # a bare weights file where a training state is expected
    torch.save(net.state_dict(), checkpoint)
    loader = CheckedCheckpointLoader(load_path=checkpoint, load_dict={"model": net, "random_states": rng})
    with pytest.raises(CheckpointMismatchError, match="holds a network's weights only"):
        loader(_loader_engine())


class _Payload:
    """What a malicious checkpoint would carry: unpickling it runs code (here: creates a file)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoints_are_loaded_as_data_never_as_code(tmp_path):
    # every loader of the project uses weights_only=True, and so does a plain torch.load under the pinned torch
    # (the default since 2.6), which is what MONAI Label's own model loading calls
    marker = tmp_path / "code_ran"
    checkpoint = str(tmp_path / "model.pt")
    torch.save({"model": _Payload(str(marker))}, checkpoint)
    net = TransUNet(**NARROW)
    with pytest.raises(Exception, match="Weights only load failed"):
        CheckedCheckpointLoader(load_path=checkpoint, load_dict={"model": net})(_loader_engine())
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(checkpoint)
    assert not marker.exists()


@pytest.mark.parametrize(
    "old_path, build",
    [
        ("custom_components.networks.ife_resnet.MultiTaskIFEResNet",
         lambda: __import__("custom_components.ife.networks", fromlist=["x"]).MultiTaskIFEResNet(channels=(4, 4, 4, 4))),
        ("custom_components.networks.ife_resnet.IFEResNet",
         lambda: __import__("custom_components.ife.networks", fromlist=["x"]).IFEResNet(channels=(4, 4, 4, 4))),
        ("custom_components.networks.transunet.TransUNet",
         lambda: TransUNet(**NARROW)),
    ],
)  # fmt: skip
def test_a_recipe_written_before_the_package_moved_still_loads(tmp_path, old_path, build):
    """custom-components 0.7.0 named the network by its old dotted path: the checkpoint keeps working."""
    network = build()
    checkpoint = tmp_path / "model.pt"
    torch.save(network.state_dict(), checkpoint)
    recipe = {"checkpoint": "model.pt", "network": old_path, "settings": {"image_size": 32},
              "bundle": {"name": "x", "version": "0.5.1"}, "written": "2026-12-01T00:00:00+00:00"}  # as 0.7.0 wrote it
    (tmp_path / "model.recipe.json").write_text(json.dumps(recipe))
    assert read_recipe(checkpoint)["network"] == MOVED_NETWORKS[old_path]
    check_recipe(checkpoint, {"image_size": 32}, network)  # no RecipeMismatchError: the same class, moved
    network.load_state_dict(torch.load(checkpoint, weights_only=True))


def test_every_moved_network_names_a_class_that_exists():
    import pydoc

    for old, new in MOVED_NETWORKS.items():
        assert isinstance(pydoc.locate(new), type), new
        assert pydoc.locate(old) is None, f"{old} still exists: it needs no alias"


def test_trained_settings_fills_what_the_recipe_lacks(tmp_path):
    checkpoint = str(tmp_path / "model.pt")
    defaults = {"image_size": 512, "filters": [64, 128], "training_aspect": None}
    assert trained_settings(checkpoint, defaults) == defaults  # no recipe: the defaults
    write_recipe(checkpoint, {"image_size": 96, "swin_feature_size": 24})
    settings = trained_settings(checkpoint, defaults)
    assert settings == {"image_size": 96, "filters": [64, 128], "training_aspect": None, "swin_feature_size": 24}
    settings["filters"].append(256)
    assert defaults["filters"] == [64, 128]  # the domain's table is never changed through a result


def test_checked_loader_restores_the_engine_under_engine_key(tmp_path):
    checkpoint = str(tmp_path / "checkpoint.pt")
    net = TransUNet(**NARROW)
    trained = _loader_engine()
    trained.run([0] * 4, max_epochs=3)
    torch.save({"model": net.state_dict(), "trainer": trained.state_dict()}, checkpoint)
    state = {"model": TransUNet(**NARROW)}  # one training state for the saver and the loader, without the trainer
    loader = CheckedCheckpointLoader(load_path=checkpoint, load_dict=state, engine_key="trainer")
    resumed = _loader_engine()
    resumed.state.max_epochs = 5
    loader(resumed)
    assert (resumed.state.epoch, resumed.state.iteration) == (3, 12)
    assert list(state) == ["model"]  # the shared dict is left as it was
    for bad in ("", "model"):
        with pytest.raises(ValueError, match="engine_key"):
            CheckedCheckpointLoader(load_path=checkpoint, load_dict=state, engine_key=bad)


def _saved_network(path, seed=0, **settings):
    torch.manual_seed(seed)
    net = TransUNet(**NARROW)
    torch.save(net.state_dict(), path)
    write_recipe(path, {"image_size": 16, "geometry": "resize", **settings}, net)
    return net


def test_load_pretrained_takes_the_weights_of_a_matching_recipe(tmp_path, caplog):
    source = _saved_network(tmp_path / "model.pt", seed=0)
    torch.manual_seed(1)
    net = TransUNet(**NARROW)
    assert not all(torch.equal(net.state_dict()[k], v) for k, v in source.state_dict().items())
    with caplog.at_level(logging.INFO):
        assert load_pretrained(net, tmp_path / "model.pt", {"image_size": 16, "geometry": "resize"}) is net
    for key, value in source.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    assert "fine-tuning from" in caplog.text
    # a training state holding the weights under "model" loads the same, and nothing given loads nothing
    torch.save({"model": source.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    other = TransUNet(**NARROW)
    load_pretrained(other, tmp_path / "checkpoint.pt", {})
    assert all(torch.equal(other.state_dict()[k], v) for k, v in source.state_dict().items())
    before = {k: v.clone() for k, v in other.state_dict().items()}
    for nothing in (None, ""):
        load_pretrained(other, nothing, {"image_size": 99})
    assert all(torch.equal(other.state_dict()[k], v) for k, v in before.items())


def test_load_pretrained_refuses_another_recipe_naming_both_values(tmp_path):
    _saved_network(tmp_path / "model.pt")
    net = TransUNet(**NARROW)
    with pytest.raises(RecipeMismatchError) as error:
        load_pretrained(net, tmp_path / "model.pt", {"image_size": 32, "geometry": "native"})
    message = str(error.value)
    assert "image_size: checkpoint 16, this run 32" in message
    assert "geometry: checkpoint 'resize', this run 'native'" in message
    assert str(tmp_path / "model.pt") in message
    # a setting that may differ is taken as this run gives it
    load_pretrained(net, tmp_path / "model.pt", {"image_size": 16, "geometry": "native"}, may_differ=["geometry"])
    # another network class is refused by name
    write_recipe(tmp_path / "model.pt", {"image_size": 16}, torch.nn.Linear(2, 2))
    with pytest.raises(RecipeMismatchError, match="network: checkpoint torch.nn.modules.linear.Linear"):
        load_pretrained(net, tmp_path / "model.pt", {"image_size": 16})


def test_load_pretrained_without_recipe_checks_shapes_and_a_missing_file(tmp_path, caplog):
    torch.save(TransUNet(**{**NARROW, "filters": (8, 8, 16)}).state_dict(), tmp_path / "model.pt")
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointMismatchError, match="cannot fine-tune from"):
        load_pretrained(TransUNet(**NARROW), tmp_path / "model.pt", {"image_size": 16})
    assert "has no recipe" in caplog.text
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_pretrained(TransUNet(**NARROW), tmp_path / "missing.pt", {})


def test_a_fine_tuned_recipe_says_where_it_started(tmp_path):
    _saved_network(tmp_path / "pretrained.pt")
    origin = started_from(tmp_path / "pretrained.pt")
    assert origin["checkpoint"] == str((tmp_path / "pretrained.pt").resolve())
    assert origin["weights_sha256"] == weights_sha256(tmp_path / "pretrained.pt")
    assert origin["network"] == "custom_components.oct.transunet.TransUNet"
    net = TransUNet(**NARROW)
    saver = RecipeSaver(str(tmp_path / "model.pt"), {"image_size": 16}, net, pretrained=tmp_path / "pretrained.pt")
    torch.save(net.state_dict(), tmp_path / "model.pt")
    saver()
    assert read_recipe(tmp_path / "model.pt")["started_from"] == origin
    # a second generation keeps the chain back to the first weights
    assert started_from(tmp_path / "model.pt")["started_from"] == origin
    # trained from its initialisation: no started_from at all
    write_recipe(tmp_path / "scratch.pt", {"image_size": 16}, net)
    assert "started_from" not in read_recipe(tmp_path / "scratch.pt")
