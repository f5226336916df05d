"""Tests of custom_components.networks.ife_resnet (multi-task network, 9-class baseline, ForwardHeads)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from custom_components.losses.ife_multitask import IFEBaselineLoss, MultiTaskIFELoss
from custom_components.networks.horizontal_attention import HorizontalAttention
from custom_components.networks.ife_resnet import ForwardHeads, IFEResNet, MultiTaskIFEResNet
from custom_components.ife_classes import call_from_probabilities, fuse_subtask_probabilities

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

# Parameter counts derived by hand from ResNet18 (BasicBlock, [2, 2, 2, 2]):
#   stem + stages 1-3 = 2,782,784; stage 4 = 8,393,728; trunk = 11,176,512 (torchvision's 11,689,512 minus its
#   512 * 1000 + 1000 classifier); each attention conv = 2 * 7 = 14 weights, one per block.
TRUNK_WITHOUT_STAGE4 = 2_782_784
STAGE4 = 8_393_728
ATTENTION = 14
BASELINE_PARAMS = TRUNK_WITHOUT_STAGE4 + STAGE4 + 512 * 9 + 9 + 8 * ATTENTION  # 11,181,241
MULTITASK_PARAMS = TRUNK_WITHOUT_STAGE4 + 2 * STAGE4 + (512 * 4 + 4) + (512 * 3 + 3) + 10 * ATTENTION  # 19,573,971

MULTITASK_KEYS = {"severe_logits", "mild_logits", "probabilities", "attention_severe", "attention_mild"}


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_parameter_counts():
    assert _count(IFEResNet()) == BASELINE_PARAMS == 11_181_241
    assert _count(IFEResNet(attention=False)) == BASELINE_PARAMS - 8 * ATTENTION
    assert _count(MultiTaskIFEResNet()) == MULTITASK_PARAMS == 19_573_971
    assert _count(MultiTaskIFEResNet(attention=False)) == MULTITASK_PARAMS - 10 * ATTENTION
    # sharing all four stages leaves two heads on one ResNet18 trunk
    assert _count(MultiTaskIFEResNet(shared_stages=4)) == TRUNK_WITHOUT_STAGE4 + STAGE4 + 2052 + 1539 + 8 * ATTENTION


def test_attention_sits_in_every_block():
    net = MultiTaskIFEResNet()
    assert sum(isinstance(m, HorizontalAttention) for m in net.modules()) == 10  # 6 shared + 2 x 2 branch blocks
    assert sum(isinstance(m, HorizontalAttention) for m in IFEResNet().modules()) == 8


@pytest.mark.parametrize("size", [(64, 64), (128, 64)])
def test_multitask_shapes(size):
    net = MultiTaskIFEResNet().eval()
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
    # 224 px: 7 rows at the last stage and 14 at the third, as in the paper; one sample keeps it fast
    net = MultiTaskIFEResNet().eval()
    with torch.no_grad():
        heads = net.forward_heads(torch.rand(1, 3, 224, 224))
    assert heads["attention_severe"].shape == (1, 7)
    assert heads["attention_shared"].shape == (1, 14)


def test_baseline_shapes():
    net = IFEResNet().eval()
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
    net = MultiTaskIFEResNet(shared_stages=shared_stages).eval()
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
    net = MultiTaskIFEResNet(attention=False).eval()
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
    net = MultiTaskIFEResNet().train()
    heads = ForwardHeads(net)(torch.rand(2, 3, 64, 64))
    loss = MultiTaskIFELoss()(heads, torch.tensor([3, 0]))  # IgG-kappa (both chains) and Negative
    assert torch.isfinite(loss)
    loss.backward()
    _assert_all_gradients(net)


def test_baseline_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    net = IFEResNet().train()
    loss = IFEBaselineLoss()(net.forward_heads(torch.rand(2, 3, 64, 64)), torch.tensor([[5.0], [1.0]]))
    loss.backward()
    _assert_all_gradients(net)


def test_scriptable():
    x = torch.rand(2, 3, 64, 64)
    for net in (MultiTaskIFEResNet().eval(), IFEResNet().eval(), MultiTaskIFEResNet(shared_stages=1).eval()):
        scripted = torch.jit.script(net)
        with torch.no_grad():
            assert torch.allclose(scripted(x), net(x), atol=1e-6)
            eager, script_heads = net.forward_heads(x), scripted.forward_heads(x)
        assert set(eager) == set(script_heads)
        for key in eager:
            assert torch.allclose(eager[key], script_heads[key], atol=1e-6), key


def test_forward_heads_adapter():
    net = MultiTaskIFEResNet().eval()
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
    net = MultiTaskIFEResNet(zero_init_last=True)
    assert all(float(block.norm2.weight.detach().abs().sum()) == 0 for block in net.severe_stages[0].blocks)
    net = IFEResNet(norm=("group", {"num_groups": 8}), act="leakyrelu").eval()
    assert isinstance(net.stem[1], nn.GroupNorm) and isinstance(net.stem[2], nn.LeakyReLU)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 9)
