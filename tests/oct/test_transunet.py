"""Tests of custom_components.oct.transunet (tiny widths so they run in seconds on a CPU)."""

from __future__ import annotations

import inspect

import pytest
import torch

from custom_components.oct.transunet import TransformerEncoderBlock, TransUNet

SMALL = dict(filters=(4, 8, 16, 32, 64), embed_dim=16, num_heads=2, mlp_dim=32)


def _net(**kwargs) -> TransUNet:
    torch.manual_seed(0)
    args = dict(SMALL, img_size=(64, 64))
    args.update(kwargs)
    return TransUNet(**args)


@pytest.mark.parametrize("size", [(64, 64), (64, 128)])
def test_output_shape(size):
    net = _net(img_size=size, out_channels=2).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 1, *size))
    assert y.shape == (2, 2, *size)
    assert torch.isfinite(y).all()


def test_divisor_and_grid():
    net = _net(img_size=(64, 128))
    assert net.divisor == 16
    assert net.grid == (4, 8)
    assert net.pos_embed.shape == (1, 16, 4, 8)
    net2 = _net(patch_size=2, img_size=(64, 96))
    assert net2.divisor == 32
    assert net2.grid == (2, 3)
    assert net2.patch_embed.kernel_size == (2, 2) and net2.patch_embed.stride == (2, 2)


def test_patch_size_2_path():
    net = _net(patch_size=2, img_size=(64, 64)).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, 64, 96))
    assert y.shape == (1, 1, 64, 96)
    # 64x96 input with patch 2 -> 2x3 token grid, interpolated embedding
    assert net._position_embedding(2, 3).shape == (1, 16, 2, 3)


def test_patch_size_2_rejects_size_divisible_by_16_only():
    net = _net(patch_size=2, img_size=(64, 64))
    with pytest.raises(ValueError, match="divisible by 32"):
        net(torch.randn(1, 1, 48, 64))


def test_indivisible_input_names_divisor_and_size():
    net = _net()
    with pytest.raises(ValueError) as err:
        net(torch.randn(1, 1, 60, 64))
    message = str(err.value)
    assert "divisible by 16" in message
    assert "60x64" in message


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(spatial_dims=3), "spatial_dims=3"),
        (dict(embed_dim=15, num_heads=2), r"embed_dim \(15\) must be divisible by num_heads \(2\)"),
        (dict(img_size=(64, 60)), r"img_size must be two sides divisible by 16"),
        (dict(img_size=(64,)), r"img_size must be two sides"),
        (dict(patch_size=2, img_size=(48, 64)), r"divisible by 32"),
        (dict(filters=(4,)), "at least 2 levels"),
        (dict(num_heads=0), "num_heads must be >= 1"),
        (dict(filters=(4, 0)), "smallest filter must be >= 1"),
    ],
)
def test_constructor_errors(kwargs, message):
    args = dict(SMALL, img_size=(64, 64))
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        TransUNet(**args)


def test_position_embedding_native_grid_is_the_parameter():
    net = _net()
    assert net._position_embedding(4, 4) is net.pos_embed


def test_position_embedding_interpolation():
    net = _net()
    pe = net._position_embedding(8, 8)
    assert pe.shape == (1, 16, 8, 8)
    # bilinear, align_corners=False, exact 2x upsampling: the mean over each 2x2 block of a
    # constant map is that constant; check with a constant embedding
    with torch.no_grad():
        net.pos_embed.fill_(0.5)
    assert torch.allclose(net._position_embedding(8, 12), torch.full((1, 16, 8, 12), 0.5))


def test_other_input_size_than_img_size():
    net = _net(img_size=(64, 64)).eval()
    with torch.no_grad():
        y = net(torch.randn(1, 1, 128, 128))
    assert y.shape == (1, 1, 128, 128)
    assert torch.isfinite(y).all()


def test_checkpoint_of_another_image_size_loads_with_resized_position_embedding():
    small = _net(img_size=(32, 32)).eval()  # 2 x 2 token grid
    large = _net(img_size=(64, 128))  # 4 x 8 token grid, same widths
    large.load_state_dict(small.state_dict())  # strict: every other parameter matches as is
    large.eval()
    assert large.pos_embed.shape == (1, 16, 4, 8)
    # the loaded map is what the small network itself uses on a 4 x 8 grid, so both give the same output
    assert torch.equal(large.pos_embed, small._position_embedding(4, 8))
    x = torch.randn(1, 1, 64, 128)
    with torch.no_grad():
        assert torch.allclose(large(x), small(x), atol=1e-5)


def test_checkpoint_of_another_embedding_width_is_still_refused():
    with pytest.raises(RuntimeError, match="pos_embed"):
        _net(embed_dim=16).load_state_dict(_net(embed_dim=32, num_heads=2).state_dict())


def test_torchscript_matches_eager():
    net = _net().eval()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        eager = net(x)
        traced = scripted(x)
        # also an interpolated grid through the scripted module
        eager2 = net(torch.ones(1, 1, 64, 128))
        traced2 = scripted(torch.ones(1, 1, 64, 128))
    assert torch.allclose(eager, traced, atol=1e-5)
    assert torch.allclose(eager2, traced2, atol=1e-5)


def test_every_parameter_gets_a_gradient():
    net = _net().train()
    x = torch.randn(2, 1, 64, 64)
    target = (torch.rand(2, 1, 64, 64) > 0.8).float()
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), target)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_transformer_block_shape_and_residual():
    torch.manual_seed(0)
    block = TransformerEncoderBlock(embed_dim=8, num_heads=2, mlp_dim=16).eval()
    z = torch.randn(3, 5, 8)
    assert block(z).shape == (3, 5, 8)
    # zero the output projections of attention and MLP: the block is the identity (pure residual)
    with torch.no_grad():
        block.attn.out_proj.weight.zero_()
        block.attn.out_proj.bias.zero_()
        block.mlp.linear2.weight.zero_()
        block.mlp.linear2.bias.zero_()
    assert torch.allclose(block(z), z)


def test_transformer_context_reaches_the_output_only_through_project():
    net = _net().eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        y0 = net(x)
        # (a constant shift over D would vanish in the LayerNorms: use a random one)
        delta = torch.randn_like(net.pos_embed)
        net.pos_embed.add_(delta)
        y1 = net(x)
        assert not torch.allclose(y0, y1)  # the position embedding matters
        net.project.weight.zero_()
        net.project.bias.zero_()
        y2 = net(x)
        net.pos_embed.sub_(delta)
        y3 = net(x)
    assert torch.allclose(y2, y3)  # no path from the transformer when its projection is zero


def _expected_parameter_count(filters, in_channels, out_channels, embed_dim, patch_size, mlp_dim, blocks, grid):
    """Count by hand: conv3x3 without bias + BatchNorm (2 per channel), transformer, 2x2 deconvs, 1x1 head."""
    count = 0
    for i, f in enumerate(filters):  # encoder, 2 convs per level
        c_in = in_channels if i == 0 else filters[i - 1]
        count += 9 * c_in * f + 2 * f + 9 * f * f + 2 * f
    d = embed_dim
    count += filters[-1] * d * patch_size**2 + d  # patch embedding
    count += d * grid[0] * grid[1]  # position embedding
    count += blocks * ((3 * d * d + 3 * d) + (d * d + d) + (d * mlp_dim + mlp_dim) + (mlp_dim * d + d) + 4 * d)
    count += 2 * d + d * filters[-1] + filters[-1]  # final LayerNorm, 1x1 projection back
    for i in range(len(filters) - 1):  # decoder: deconv, then 2 convs after concatenation
        f = filters[i]
        count += 4 * filters[i + 1] * f + f + 9 * 2 * f * f + 2 * f + 9 * f * f + 2 * f
    return count + filters[0] * out_channels + out_channels


def test_parameter_count_small_by_hand():
    net = _net(out_channels=2)
    assert sum(p.numel() for p in net.parameters()) == _expected_parameter_count(
        SMALL["filters"], 1, 2, 16, 1, 32, 2, (4, 4)
    )


def test_defaults_are_table_2():
    defaults = {k: v.default for k, v in inspect.signature(TransUNet).parameters.items()}
    table_2 = dict(num_down_convs=2, num_up_convs=2, num_transformer_blocks=2, num_heads=2, mlp_dim=384, embed_dim=96)
    assert {k: defaults[k] for k in table_2} == table_2
    assert len(defaults["filters"]) == 5  # "filter number 5"
    assert defaults["in_channels"] == defaults["out_channels"] == 1


@pytest.mark.parametrize("patch_size, expected", [(1, 31_556_385), (4, 32_938_785)])
def test_parameter_count_of_the_paper_configuration(patch_size, expected):
    # the numbers quoted in docs/oct_method_notes.md (512 x 512, in_channels=1)
    net = TransUNet(patch_size=patch_size)
    count = sum(p.numel() for p in net.parameters())
    grid = (512 // (16 * patch_size),) * 2
    assert count == _expected_parameter_count((64, 128, 256, 512, 1024), 1, 1, 96, patch_size, 384, 2, grid)
    assert count == expected


def test_transformer_block_is_pre_ln_attention_then_mlp():
    torch.manual_seed(3)
    block = TransformerEncoderBlock(embed_dim=8, num_heads=2, mlp_dim=12).eval()
    z = torch.randn(2, 5, 8)
    # the paper's Eqs. 3-4 written out: z' = MSA(LN(z)) + z, z'' = MLP(LN(z')) + z'
    h = block.norm1(z)
    q, k, v = block.attn.qkv(h).chunk(3, dim=-1)
    heads = [
        torch.softmax(q[..., i * 4 : (i + 1) * 4] @ k[..., i * 4 : (i + 1) * 4].transpose(1, 2) / 2.0, dim=-1)
        @ v[..., i * 4 : (i + 1) * 4]
        for i in range(2)
    ]
    z1 = z + block.attn.out_proj(torch.cat(heads, dim=-1))
    m = block.norm2(z1)
    z2 = z1 + block.mlp.linear2(torch.nn.functional.gelu(block.mlp.linear1(m)))
    with torch.no_grad():
        assert torch.allclose(block(z), z2, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(embed_dim=10, num_heads=3), r"embed_dim \(10\) must be divisible by num_heads \(3\)"),
        (dict(dropout=1.5), "dropout must be in"),
    ],
)
def test_transformer_block_errors(kwargs, message):
    args = dict(embed_dim=8, num_heads=2, mlp_dim=12)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        TransformerEncoderBlock(**args)
