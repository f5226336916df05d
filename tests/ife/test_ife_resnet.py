"""Tests of custom_components.ife.networks (multi-task network, 9-class baseline, ForwardHeads)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from custom_components.ife.losses import IFEBaselineLoss, MultiTaskIFELoss
from custom_components.ife.horizontal_attention import HorizontalAttention
from custom_components.ife.networks import RESNET18_CHANNELS, ForwardHeads, IFEResNet, MultiTaskIFEResNet
from custom_components.ife.classes import call_from_probabilities, fuse_subtask_probabilities

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

# Parameter counts derived by hand from ResNet18 (BasicBlock, [2, 2, 2, 2]):
#   stem + stages 1-3 = 2,782,784; stage 4 = 8,393,728; trunk = 11,176,512 (torchvision's 11,689,512 minus its
#   512 * 1000 + 1000 classifier); each attention conv = 2 * 7 = 14 weights, one per block.
TRUNK_WITHOUT_STAGE4 = 2_782_784
STAGE4 = 8_393_728
ATTENTION = 14
BASELINE_PARAMS = TRUNK_WITHOUT_STAGE4 + STAGE4 + 512 * 9 + 9 + 8 * ATTENTION  # 11,181,241
MULTITASK_PARAMS = TRUNK_WITHOUT_STAGE4 + 2 * STAGE4 + (512 * 4 + 4) + (512 * 3 + 3) + 10 * ATTENTION  # 19,573,971

MULTITASK_KEYS = {
    "severe_logits", "mild_logits", "severe_row_logits", "mild_row_logits", "probabilities", "attention_severe",
    "attention_mild",
}  # fmt: skip

#: stage widths of the narrow networks most tests build: the same blocks, strides and attention, 1/64 of the weights
NARROW = (8, 16, 32, 64)


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _stage_params(c_in: int, c_out: int, stride: int) -> int:
    """Two basic blocks with batch norm (attention not counted); a 1x1 projection where the shape changes."""
    first = 9 * c_in * c_out + 9 * c_out * c_out + 4 * c_out
    if stride != 1 or c_in != c_out:
        first += c_in * c_out + 2 * c_out
    return first + 18 * c_out * c_out + 4 * c_out


def _trunk_params(channels) -> tuple[int, int]:
    """(stem + stages 1-3, stage 4) of a ResNet18 trunk (no attention) with the given widths and RGB input."""
    c1, c2, c3, c4 = channels
    stem = 3 * c1 * 49 + 2 * c1
    first_three = stem + _stage_params(c1, c1, 1) + _stage_params(c1, c2, 2) + _stage_params(c2, c3, 2)
    return first_three, _stage_params(c3, c4, 2)


def test_parameter_counts():
    assert _count(IFEResNet()) == BASELINE_PARAMS == 11_181_241
    assert _count(IFEResNet(attention=False)) == BASELINE_PARAMS - 8 * ATTENTION
    assert _count(MultiTaskIFEResNet()) == MULTITASK_PARAMS == 19_573_971
    assert _count(MultiTaskIFEResNet(attention=False)) == MULTITASK_PARAMS - 10 * ATTENTION
    # sharing all four stages leaves two heads on one ResNet18 trunk
    assert _count(MultiTaskIFEResNet(shared_stages=4)) == TRUNK_WITHOUT_STAGE4 + STAGE4 + 2052 + 1539 + 8 * ATTENTION


def test_parameter_counts_follow_channels():
    assert _trunk_params(RESNET18_CHANNELS) == (TRUNK_WITHOUT_STAGE4, STAGE4)  # the formula agrees with the above
    first, stage4 = _trunk_params(NARROW)
    heads = (64 * 4 + 4) + (64 * 3 + 3)
    assert _count(MultiTaskIFEResNet(channels=NARROW)) == first + 2 * stage4 + heads + 10 * ATTENTION
    # a list, as from a JSON config
    assert _count(IFEResNet(channels=list(NARROW))) == first + stage4 + 64 * 9 + 9 + 8 * ATTENTION
    wide = (32, 32, 64, 96)  # any widths, not only doublings: the first stage keeps its identity shortcut
    first, stage4 = _trunk_params(wide)
    assert _count(IFEResNet(channels=wide)) == first + stage4 + 96 * 9 + 9 + 8 * ATTENTION


def test_channels_set_every_width():
    net = MultiTaskIFEResNet(channels=[8, 16, 32, 64], shared_stages=2).eval()
    assert net.channels == NARROW and IFEResNet().channels == RESNET18_CHANNELS == (64, 128, 256, 512)
    assert net.stem[0].out_channels == 8
    assert [stage.blocks[-1].conv2.out_channels for stage in net.shared] == [8, 16]
    assert [stage.blocks[-1].conv2.out_channels for stage in net.severe_stages] == [32, 64]
    assert net.severe_head.in_features == net.mild_head.in_features == 64
    severe, mild, severe_maps, _ = net.forward_features(torch.rand(2, 3, 64, 96))
    assert severe.shape == mild.shape == (2, 64, 2, 3)  # (B, C4, H/32, W/32)
    assert [m.shape for m in severe_maps] == [(2, 16), (2, 8), (2, 4), (2, 2)]  # H/4 ... H/32, whatever the widths
    features, _ = IFEResNet(channels=NARROW).forward_features(torch.rand(1, 3, 64, 64))
    assert features.shape == (1, 64, 2, 2)


@pytest.mark.parametrize(
    "bad",
    [(8, 16, 32), (8, 16, 32, 64, 128), (8, 16, 0, 64), (8, 16, True, 64), (8.0, 16, 32, 64), "8,16,32,64", 64, None],
)
def test_bad_channels(bad):
    message = "channels must be 4 positive integers (the stage widths, ResNet18: [64, 128, 256, 512]), got"
    for cls in (MultiTaskIFEResNet, IFEResNet):
        with pytest.raises(ValueError) as info:
            cls(channels=bad)
        assert str(info.value) == f"{message} {bad!r}."


def test_attention_sits_in_every_block():
    net = MultiTaskIFEResNet(channels=NARROW)
    assert sum(isinstance(m, HorizontalAttention) for m in net.modules()) == 10  # 6 shared + 2 x 2 branch blocks
    assert sum(isinstance(m, HorizontalAttention) for m in IFEResNet(channels=NARROW).modules()) == 8


@pytest.mark.parametrize("size", [(64, 64), (128, 64)])
def test_multitask_shapes(size):
    net = MultiTaskIFEResNet(channels=NARROW).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        heads = net.forward_heads(x)
        probs = net(x)
    h = size[0]  # attention maps follow the image HEIGHT (rows), not the width
    assert set(heads) == MULTITASK_KEYS | {"attention_shared"}
    assert heads["severe_logits"].shape == (2, 4) and heads["mild_logits"].shape == (2, 3)
    assert heads["attention_severe"].shape == (2, h // 32) and heads["attention_mild"].shape == (2, h // 32)
    assert heads["attention_shared"].shape == (2, h // 16)
    assert probs.shape == (2, 9)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))
    expected = fuse_subtask_probabilities(heads["severe_logits"].softmax(1), heads["mild_logits"].softmax(1))
    assert torch.allclose(probs, expected)
    calls = call_from_probabilities(probs)
    assert calls.shape == (2,)


def test_paper_input_size():
    # 224 px: 7 rows at the last stage and 14 at the third, as in the paper (the widths play no part)
    net = MultiTaskIFEResNet(channels=NARROW).eval()
    with torch.no_grad():
        heads = net.forward_heads(torch.rand(1, 3, 224, 224))
    assert heads["attention_severe"].shape == (1, 7)
    assert heads["attention_shared"].shape == (1, 14)


def test_baseline_shapes():
    net = IFEResNet(channels=NARROW).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        heads = net.forward_heads(x)
        probs = net(x)
    assert set(heads) == {"logits", "probabilities", "attention", "attention_shared"}
    assert heads["logits"].shape == (2, 9)
    assert heads["attention"].shape == (2, 2) and heads["attention_shared"].shape == (2, 4)
    assert torch.allclose(probs, heads["logits"].softmax(1))


@pytest.mark.parametrize("shared_stages", [0, 2, 4])
def test_shared_stages_variants(shared_stages):
    net = MultiTaskIFEResNet(shared_stages=shared_stages, channels=NARROW).eval()
    assert len(net.shared) == shared_stages
    assert len(net.severe_stages) == len(net.mild_stages) == 4 - shared_stages
    with torch.no_grad():
        heads = net.forward_heads(torch.rand(2, 3, 64, 64))
    if shared_stages >= 3:
        assert heads["attention_shared"].shape == (2, 4)
        assert torch.equal(heads["attention_severe"], heads["attention_mild"])  # stage 4 shared too
    else:
        assert heads["attention_severe_stage3"].shape == heads["attention_mild_stage3"].shape == (2, 4)
        assert "attention_shared" not in heads


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shared_stages": 5}, r"shared_stages must be an integer in \[0, 4\], got 5"),
        ({"shared_stages": -1}, "got -1"),
        ({"shared_stages": True}, "got True"),
        ({"shared_stages": 2.0}, "got 2.0"),
        ({"num_severe": 3}, "num_severe=3"),
        ({"in_channels": 0}, "in_channels must be a positive integer, got 0"),
        ({"attention_kernel_size": 4}, "kernel_size must be a positive odd integer, got 4"),
    ],
)
def test_multitask_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiTaskIFEResNet(**kwargs)


def test_baseline_bad_arguments():
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got 0"):
        IFEResNet(num_classes=0)


def test_attention_disabled_gives_maps_of_ones():
    net = MultiTaskIFEResNet(attention=False, channels=NARROW).eval()
    with torch.no_grad():
        heads = net.forward_heads(torch.rand(2, 3, 64, 64))
    for key in ("attention_severe", "attention_mild", "attention_shared"):
        assert torch.equal(heads[key], torch.ones_like(heads[key]))


def _assert_all_gradients(net: nn.Module) -> None:
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    for name, p in net.named_parameters():
        assert bool(torch.isfinite(p.grad).all()), f"non-finite gradient in {name}"
        assert bool(p.grad.abs().sum() > 0), f"zero gradient in {name}"


def test_multitask_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    net = MultiTaskIFEResNet(channels=NARROW).train()
    heads = ForwardHeads(net)(torch.rand(2, 3, 64, 64))
    loss = MultiTaskIFELoss()(heads, torch.tensor([3, 0]))  # IgG-kappa (both chains) and Negative
    assert torch.isfinite(loss)
    loss.backward()
    _assert_all_gradients(net)


def test_baseline_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    net = IFEResNet(channels=NARROW).train()
    loss = IFEBaselineLoss()(net.forward_heads(torch.rand(2, 3, 64, 64)), torch.tensor([[5.0], [1.0]]))
    loss.backward()
    _assert_all_gradients(net)


def test_scriptable():
    x = torch.rand(2, 3, 64, 64)
    nets = (IFEResNet(), MultiTaskIFEResNet(channels=NARROW), MultiTaskIFEResNet(shared_stages=1, channels=NARROW))
    for net in (n.eval() for n in nets):
        scripted = torch.jit.script(net)
        with torch.no_grad():
            assert torch.allclose(scripted(x), net(x), atol=1e-6)
            eager, script_heads = net.forward_heads(x), scripted.forward_heads(x)
        assert set(eager) == set(script_heads)
        for key in eager:
            assert torch.allclose(eager[key], script_heads[key], atol=1e-6), key


def test_forward_heads_adapter():
    net = MultiTaskIFEResNet(channels=NARROW).eval()
    adapter = ForwardHeads(net)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out, direct = adapter(x), net.forward_heads(x)
    assert set(out) == set(direct) and all(torch.equal(out[k], direct[k]) for k in out)
    # no parameters of its own: the checkpoint of `network` has the same keys with or without the adapter
    assert {k.removeprefix("network.") for k in adapter.state_dict()} == set(net.state_dict())
    assert _count(adapter) == _count(net)
    with pytest.raises(ValueError, match="forward_heads"):
        ForwardHeads(nn.Linear(2, 2))


def test_zero_init_last_and_monai_layer_options():
    net = MultiTaskIFEResNet(zero_init_last=True, channels=NARROW)
    blocks = [block for stage in [*net.shared, *net.severe_stages, *net.mild_stages] for block in stage.blocks]
    assert len(blocks) == 10 and all(float(block.norm2.weight.detach().abs().sum()) == 0 for block in blocks)
    assert float(net.stem[1].weight.detach().min()) == 1.0  # only the blocks' last norms are zeroed
    net = IFEResNet(norm=("group", {"num_groups": 8}), act="leakyrelu", channels=NARROW).eval()
    assert isinstance(net.stem[1], nn.GroupNorm) and isinstance(net.stem[2], nn.LeakyReLU)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 9)


def test_tie_attention_shares_exactly_the_attention_convolutions():
    untied = MultiTaskIFEResNet(channels=NARROW)
    tied = MultiTaskIFEResNet(channels=NARROW, tie_attention=True)
    for severe_stage, mild_stage in zip(tied.severe_stages, tied.mild_stages):
        for severe_block, mild_block in zip(severe_stage.blocks, mild_stage.blocks):
            assert mild_block.attention is severe_block.attention
    # every parameter of the mild branch except the attention convolutions is its own tensor
    severe_ids = {id(p) for p in tied.severe_stages.parameters()}
    shared = [name for name, p in tied.mild_stages.named_parameters(remove_duplicate=False) if id(p) in severe_ids]
    assert shared and all(name.endswith("attention.conv.weight") for name in shared)
    assert len(shared) == 2  # one stage of two blocks after three shared stages
    attention_weights = sum(m.conv.weight.numel() for m in untied.mild_stages.modules() if isinstance(m, HorizontalAttention))
    n_untied = sum(p.numel() for p in untied.parameters())
    assert sum(p.numel() for p in tied.parameters()) == n_untied - attention_weights
    # a tied checkpoint loads into an untied network (both keys are present), with the same outputs
    untied.load_state_dict(tied.state_dict())
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(tied.eval()(x), untied.eval()(x))


def test_stage4_row_stride_keeps_the_rows_of_stage3():
    for net in (MultiTaskIFEResNet(channels=NARROW, stage4_row_stride=1), IFEResNet(channels=NARROW, stage4_row_stride=1)):
        with torch.no_grad():
            heads = net.eval().forward_heads(torch.rand(1, 3, 128, 96))
        last = heads.get("attention_severe", heads.get("attention"))
        assert last.shape == (1, 8) and heads["attention_shared"].shape == (1, 8)  # 128 / 16 rows
        assert net.attention_strides()["attention_severe"] == 16 and net.attention_strides()["attention_shared"] == 16
    assert MultiTaskIFEResNet(channels=NARROW).attention_strides()["attention_mild"] == 32
    with pytest.raises(ValueError, match="stage4_row_stride must be 1 or 2"):
        MultiTaskIFEResNet(stage4_row_stride=4)


def test_row_logits_decompose_the_head_logits():
    net = MultiTaskIFEResNet(channels=NARROW).eval()
    with torch.no_grad():
        heads = net.forward_heads(torch.rand(2, 3, 128, 64))
    assert heads["severe_row_logits"].shape == (2, 4, 4) and heads["mild_row_logits"].shape == (2, 3, 4)
    # global average pooling is linear: the rows' mean plus the bias is the head's logit
    severe = heads["severe_row_logits"].mean(dim=2) + net.severe_head.bias
    mild = heads["mild_row_logits"].mean(dim=2) + net.mild_head.bias
    assert torch.allclose(severe, heads["severe_logits"], atol=1e-5)
    assert torch.allclose(mild, heads["mild_logits"], atol=1e-5)


@pytest.mark.parametrize("kind", ["multitask", "nine_class"])
def test_forward_heads_with_temperatures(kind):
    torch.manual_seed(0)
    if kind == "multitask":
        net, temperatures = MultiTaskIFEResNet(channels=NARROW).eval(), {"severe": 2.0, "mild": 0.5}
    else:
        net, temperatures = IFEResNet(channels=NARROW, num_classes=9).eval(), {"classes": 3.0}
    x = torch.rand(2, 3, 64, 64)
    tempered = ForwardHeads(net, temperatures=temperatures)
    with torch.no_grad():
        out, raw = tempered(x), net.forward_heads(x)
    if kind == "multitask":
        expected = fuse_subtask_probabilities(
            torch.softmax(raw["severe_logits"] / 2.0, dim=1), torch.softmax(raw["mild_logits"] / 0.5, dim=1)
        )
    else:
        expected = torch.softmax(raw["logits"] / 3.0, dim=1)
    assert out["probabilities"].shape == raw["probabilities"].shape
    assert torch.allclose(out["probabilities"], expected, atol=1e-6)
    assert not torch.allclose(out["probabilities"], raw["probabilities"], atol=1e-4)
    # the logits stay untempered, and the temperatures are a buffer outside the state dict
    assert all(torch.equal(out[k], raw[k]) for k in raw if k != "probabilities")
    assert {k.removeprefix("network.") for k in tempered.state_dict()} == set(net.state_dict())
    assert tempered.temperatures.device == next(net.parameters()).device
    # None or {} is the plain adapter
    with torch.no_grad():
        assert torch.equal(ForwardHeads(net, temperatures={})(x)["probabilities"], raw["probabilities"])


def test_forward_heads_temperature_errors():
    net = MultiTaskIFEResNet(channels=NARROW)
    with pytest.raises(ValueError, match="keys"):
        ForwardHeads(net, temperatures={"severe": 1.0})
    with pytest.raises(ValueError, match=r"MultiTaskIFEResNet takes temperatures"):
        ForwardHeads(net, temperatures={"classes": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        ForwardHeads(net, temperatures={"severe": 0.0, "mild": 1.0})


@pytest.mark.parametrize("network_class", [MultiTaskIFEResNet, IFEResNet])
def test_the_authors_initialisation_is_pytorchs_with_their_attention_bound(network_class):
    """"authors": convolutions as PyTorch constructs them (std 1/sqrt(3 fan_in), 2.45x below Kaiming fan-out's
    sqrt(2/fan_out) for a 3x3, 64 -> 64 convolution) and attention weights within the bound of their 7x7 Conv2d."""
    torch.manual_seed(0)
    kaiming, authors = network_class(), network_class(init="authors")
    weights = {name: [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape == (64, 64, 3, 3)]
               for name, net in (("kaiming", kaiming), ("authors", authors))}  # fmt: skip
    std = {name: torch.cat([w.flatten() for w in ws]).std().item() for name, ws in weights.items()}
    assert std["kaiming"] == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    assert std["authors"] == pytest.approx(1 / (3 * 576) ** 0.5, rel=0.05)
    assert std["kaiming"] / std["authors"] == pytest.approx(2.45, rel=0.05)
    bound = 1 / (2 * 7 * 7) ** 0.5
    attention = [m.conv.weight for m in authors.modules() if isinstance(m, HorizontalAttention)]
    assert attention and all(w.abs().max() <= bound for w in attention)
    assert max(w.abs().max() for w in attention) > 0.8 * bound  # drawn over the whole range, not shrunk


def test_an_unknown_initialisation_is_refused():
    with pytest.raises(ValueError, match="init must be one of"):
        MultiTaskIFEResNet(init="xavier")
