"""Synthetic OCT B-scans: determinism, sizes, retinal anatomy, mask/image agreement and the datalist."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from custom_components.oct.synthetic import (
    _fluid_reflectivity,
    DEFAULT_FLUID_FRACTION,
    DEFAULT_FLUID_TYPE_WEIGHTS,
    DEFAULT_TYPED_WEIGHTS,
    FluidType,
    render_bscan,
    synthesize_oct_dataset,
)

FLUID_TYPES = ("intraretinal", "subretinal", "both")


def _digest(folder):
    files = sorted((folder / "images").iterdir()) + sorted((folder / "masks").iterdir())
    files += [folder / "datalist.json", folder / "synthesis.json"]
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = synthesize_oct_dataset(tmp_path / "a", count=4, seed=11, image_size=(48, 64)).parent
    b = synthesize_oct_dataset(tmp_path / "b", count=4, seed=11, image_size=(48, 64)).parent
    c = synthesize_oct_dataset(tmp_path / "c", count=4, seed=12, image_size=(48, 64)).parent
    digest_a, digest_c = _digest(a), _digest(c)
    assert digest_a == _digest(b)
    assert len(digest_a) == 2 * 4 + 2
    images = [k for k in digest_a if k.startswith("images/")]
    assert all(digest_a[k] != digest_c[k] for k in images)


def test_render_is_a_pure_function_of_the_generator_state():
    first = render_bscan(np.random.default_rng(5), (40, 56))
    second = render_bscan(np.random.default_rng(5), (40, 56))
    other = render_bscan(np.random.default_rng(6), (40, 56))
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])


# sha256 of image.tobytes() and mask.tobytes() as rendered before render_bscan was split into stages (commit
# 3d1066e; numpy 1.26.4, scipy 1.17.1, x86-64): the stages draw from the generator in the same order and compute the
# same values. A mismatch means the random stream or the arithmetic changed (or, with other numpy/scipy builds or
# CPUs, that float rounding did: check with the old code on that machine before updating these).
REFERENCE_SCANS = [
    (0, (64, 64), None, "5d4e313c6dc67d8f8e2b18caa8aff00fcc0761a7c1eb042a11e70799fb86cc29",
     "ad7facb2586fc6e966c004d7d1d16b024f5805ff7cb47c7a85dabd8b48892ca7"),
    (1, (128, 160), "intraretinal", "07000fc9c09e506a8432adaa4aaace7203a0f3090889e7362b5ac412e971a156",
     "45fb97eaeff4b655832c987800186b0094c011652cef4846da08a139995884f9"),
    (2, (96, 80), "subretinal", "f200a475f659ac6b3446d046c346b32897be325e248e5ab21ed3a36d3fd4cbc5",
     "89556cdb72653dcff8a672650b354f3cd8dd5a86f714bbf38c1afd0c29897bac"),
    (3, (128, 128), "both", "866e82a2ffe6bf2a5831670389b582c9b754efc61d8ae8ff3d58f6e05456eb94",
     "edb1863f116104650bb50c72f2b91866bb504324eda146f61f438b0dd61ad4b5"),
    (4, (48, 56), "none", "28ab1b4a0346eb29afffe542ed489c47d19981f22d854df41c25418916394697",
     "bb270d5b01806f81489807bec2d3a07d07d3df4ecca188d9390cf4323ddbbee1"),
]  # fmt: skip


@pytest.mark.parametrize("seed, size, fluid, image_sha, mask_sha", REFERENCE_SCANS)
def test_render_reproduces_the_reference_bytes(seed, size, fluid, image_sha, mask_sha):
    image, mask = render_bscan(np.random.default_rng(seed), size, fluid=fluid)
    assert hashlib.sha256(image.tobytes()).hexdigest() == image_sha
    assert hashlib.sha256(mask.tobytes()).hexdigest() == mask_sha


@pytest.mark.parametrize("size", [(16, 16), (32, 32), (48, 96), (96, 40), (512, 512)])
@pytest.mark.parametrize("fluid", ["none", "both"])
def test_any_size_gives_uint8_image_and_binary_mask(size, fluid):
    image, mask, info = render_bscan(np.random.default_rng(3), size, fluid=fluid, return_info=True)
    assert image.shape == size and mask.shape == size
    assert image.dtype == np.uint8 and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    assert info["fluid_pixels"] == int(mask.sum())
    assert (mask.sum() > 0) == (fluid != "none")  # even 16 x 16 scans keep their fluid
    assert image.std() > 10  # not a flat image
    for key in ("ilm", "rpe_top", "bruch"):
        assert info[key].shape == (size[1],)


def test_default_size_is_512_square():
    image, mask = render_bscan(np.random.default_rng(0), fluid="none")
    assert image.shape == mask.shape == (512, 512)


def test_layer_order_and_dark_vitreous_above_bright_retina():
    for seed in range(4):
        image, _, info = render_bscan(np.random.default_rng(seed), (128, 160), return_info=True)
        ilm, rpe_top, bruch = info["ilm"], info["rpe_top"], info["bruch"]
        assert np.all(ilm >= 0) and np.all(bruch < 128)
        assert np.all(ilm < rpe_top) and np.all(rpe_top < bruch)
        rows = np.arange(128)[:, None]
        vitreous = rows < ilm[None, :] - 3
        retina = (rows > ilm[None, :] + 1) & (rows < bruch[None, :])
        assert image[vitreous].mean() + 30 < image[retina].mean()
        # the RPE band is the brightest tissue: brighter than the retina above it on average
        rpe = (rows >= rpe_top[None, :] + 0.5) & (rows < bruch[None, :] - 0.5)
        assert image[rpe].mean() > image[retina].mean() + 20


def test_foveal_pit_thins_the_retina_at_the_fovea():
    checked = 0
    for seed in range(12):
        _, _, info = render_bscan(np.random.default_rng(seed), (256, 256), fluid="none", return_info=True)
        if info["pit_depth"] < 0.7:  # scans off the foveal centre have a shallow pit
            continue
        thickness = info["bruch"] - info["ilm"]
        fovea = int(round(info["fovea_col"]))
        assert thickness[fovea] < 0.85 * thickness[max(0, fovea - 60) : fovea + 61].max()
        checked += 1
    assert checked >= 5


def test_vessel_shadows_darken_the_columns_below_them():
    drops = []
    for seed in range(3):
        image, _, info = render_bscan(np.random.default_rng(seed), (256, 256), fluid="none", return_info=True)
        img = image.astype(float)
        for vx in info["vessel_cols"]:
            col = int(round(vx))
            if not 12 <= col < 256 - 12:
                continue
            # outer retina between the vessel's depth and the RPE top
            r0, r1 = int(info["ilm"][col] + 0.5 * (info["rpe_top"][col] - info["ilm"][col])), int(info["rpe_top"][col])
            shadow = img[r0:r1, col].mean()
            beside = np.mean([img[r0:r1, col - 10].mean(), img[r0:r1, col + 10].mean()])
            drops.append(beside - shadow)
    assert len(drops) >= 4
    assert np.mean(drops) > 8


@pytest.mark.parametrize("fluid", FLUID_TYPES)
def test_mask_marks_dark_pockets_inside_the_retina(fluid):
    for seed in range(4):
        image, mask, info = render_bscan(np.random.default_rng(seed), (128, 128), fluid=fluid, return_info=True)
        assert mask.sum() > 0
        rows, cols = np.nonzero(mask)
        assert np.all(rows > info["ilm"][cols]) and np.all(rows < info["bruch"][cols])
        # the fluid is darker than the retina right around it
        ring = binary_dilation(mask > 0, iterations=3) & (mask == 0)
        ring_rows, ring_cols = np.nonzero(ring)
        in_retina = (ring_rows > info["ilm"][ring_cols] + 1) & (ring_rows < info["bruch"][ring_cols])
        assert image[mask > 0].mean() + 15 < image[ring_rows[in_retina], ring_cols[in_retina]].mean()
        assert info["fluid"] == fluid
        assert (info["cysts"] > 0) == (fluid != "subretinal")
        assert info["subretinal"] == (fluid != "intraretinal")


def test_subretinal_fluid_sits_on_the_rpe():
    _, mask, info = render_bscan(np.random.default_rng(1), (128, 128), fluid="subretinal", return_info=True)
    rows, cols = np.nonzero(mask)
    # every fluid column reaches down to the RPE top (within the anti-aliased edge)
    lowest = {c: r for r, c in zip(rows, cols)}  # row-major order: the last row seen per column is the lowest
    assert all(abs(r - info["rpe_top"][c]) <= 1.5 for c, r in lowest.items())


def test_no_fluid_gives_an_empty_mask():
    for seed in range(3):
        _, mask, info = render_bscan(np.random.default_rng(seed), (64, 64), fluid="none", return_info=True)
        assert mask.sum() == 0 and info["cysts"] == 0 and not info["subretinal"]


def test_random_fluid_follows_fluid_fraction():
    drawn = [render_bscan(np.random.default_rng(s), (32, 32), return_info=True)[2]["fluid"] for s in range(40)]
    with_fluid = sum(f != "none" for f in drawn)
    assert 8 < with_fluid < 32  # about half (the default is the paper's 194 of 379)
    for seed in range(5):
        _, mask, info = render_bscan(np.random.default_rng(seed), (32, 32), fluid_fraction=0.0, return_info=True)
        assert info["fluid"] == "none" and mask.sum() == 0
    _, _, info = render_bscan(np.random.default_rng(0), (32, 32), fluid="SUBRETINAL", return_info=True)
    assert info["fluid"] == "subretinal"


def test_dataset_files_datalist_and_summary(tmp_path):
    count = 12
    root = tmp_path / "oct"
    datalist_path = synthesize_oct_dataset(root, count=count, seed=0, image_size=(40, 72), fluid_fraction=0.5)
    assert datalist_path == root / "datalist.json"
    datalist = json.loads(datalist_path.read_text())
    assert set(datalist) == {"training", "validation", "testing"}
    entries = [e for section in datalist.values() for e in section]
    assert len(entries) == count and len({e["image"] for e in entries}) == count
    summary = json.loads((root / "synthesis.json").read_text())
    assert summary["count"] == count and summary["image_size"] == [40, 72] and summary["seed"] == 0
    per_image = {d["image"]: d for d in summary["images"]}
    for entry in entries:
        assert set(entry) == {"image", "label", "group"}
        # each scan is drawn on its own: its group (what cross-validation keeps in one fold) is the scan itself
        assert entry["group"] == Path(entry["image"]).stem
        assert entry["image"].startswith("images/") and entry["label"].startswith("masks/")
        image, mask = Image.open(root / entry["image"]), Image.open(root / entry["label"])
        assert image.mode == "L" and mask.mode == "L" and image.size == mask.size == (72, 40)
        values = np.asarray(mask)
        assert set(np.unique(values)) <= {0, 255}
        assert per_image[entry["image"]]["fluid_pixels"] == int((values == 255).sum())
        assert (values.max() == 255) == (per_image[entry["image"]]["fluid"] != "none")
    # exact fluid count, and both kinds in training and testing (stratified split)
    assert summary["fluid_counts"]["none"] == count // 2
    assert sum(summary["fluid_counts"][t] for t in FLUID_TYPES) == count // 2
    for section in ("training", "testing"):
        kinds = {per_image[e["image"]]["fluid"] == "none" for e in datalist[section]}
        assert kinds == {True, False}
    assert summary["split_counts"] == {k: len(v) for k, v in datalist.items()}


def test_default_fluid_fraction_gives_both_kinds_even_for_two_images(tmp_path):
    assert 0.5 < DEFAULT_FLUID_FRACTION < 0.52  # 194 fluid scans of 379
    synthesize_oct_dataset(tmp_path, count=2, seed=0, image_size=(32, 32))
    summary = json.loads((tmp_path / "synthesis.json").read_text())
    assert summary["fluid_counts"]["none"] == 1 and summary["fluid_fraction"] == DEFAULT_FLUID_FRACTION


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"count": 0}, "count"),
        ({"count": 2, "splits": (0.5, 0.5)}, "splits"),
        ({"count": 2, "splits": (0.8, 0.3, 0.1)}, "splits"),
        ({"count": 2, "fluid_fraction": 1.5}, "fluid_fraction"),
        ({"count": 2, "image_size": (8, 64)}, "image_size"),
        ({"count": 2, "image_size": (32,)}, "image_size"),
        ({"count": 2, "fluid_type_weights": {"cyst": 1.0}}, "cyst"),
        ({"count": 2, "fluid_type_weights": {"both": 0.0}}, "fluid_type_weights"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        synthesize_oct_dataset(tmp_path, seed=0, **kwargs)


def test_bad_fluid_type_raises():
    with pytest.raises(ValueError, match="cyst"):
        render_bscan(np.random.default_rng(0), (32, 32), fluid="cyst")
    assert [t.value for t in FluidType] == [
        "none", "intraretinal", "subretinal", "both", "ped", "intraretinal+ped", "subretinal+ped", "all"
    ]  # fmt: skip


# ---- additions: sizes named in the spec, render errors, file/render agreement, synthesis.json bookkeeping ----


@pytest.mark.parametrize("size", [(32, 32), (48, 80)])
def test_render_shapes_rows_first(size):
    image, mask = render_bscan(np.random.default_rng(0), size, fluid="intraretinal")
    assert image.shape == size and mask.shape == size  # (H, W): rows first, not PIL's (W, H)
    assert mask.any()


def test_fluid_scans_are_never_empty_over_seeds():
    for seed in range(8):
        for fluid in FLUID_TYPES:
            _, mask = render_bscan(np.random.default_rng(seed), (32, 48), fluid=fluid)
            assert mask.sum() >= 1, (seed, fluid)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image_size": (15, 64)}, r"at least \(16, 16\)"),
        ({"image_size": (64, 4)}, r"at least \(16, 16\)"),
        ({"image_size": (32, 32, 3)}, "image_size must be"),
        ({"fluid_fraction": -0.1}, "fluid_fraction"),
        ({"fluid_type_weights": {"both": -1.0, "subretinal": 2.0}}, "fluid_type_weights"),
    ],
)
def test_render_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_bscan(np.random.default_rng(0), **kwargs)


@pytest.mark.parametrize("count", [-1, 2.5])
def test_count_must_be_a_positive_integer(tmp_path, count):
    with pytest.raises(ValueError, match="count must be an integer >= 1"):
        synthesize_oct_dataset(tmp_path, count=count)


def test_written_files_are_the_rendered_scans(tmp_path):
    root = tmp_path / "d"
    synthesize_oct_dataset(root, count=3, seed=4, image_size=(32, 48), fluid_fraction=1.0)
    summary = json.loads((root / "synthesis.json").read_text())
    for index, detail in enumerate(summary["images"]):
        image, mask = render_bscan(np.random.default_rng([4, 2, index]), (32, 48), fluid=detail["fluid"])
        assert np.array_equal(np.asarray(Image.open(root / f"images/oct_{index:05d}.png")), image)
        assert np.array_equal(np.asarray(Image.open(root / f"masks/oct_{index:05d}.png")), mask * 255)
    assert summary["fluid_counts"]["none"] == 0
    assert sum(summary["fluid_counts"].values()) == 3


def test_small_groups_go_to_training_only(tmp_path):
    # 2 fluid + 2 no-fluid scans: each group has fewer than 3 scans, so nothing is held out
    datalist = json.loads(synthesize_oct_dataset(tmp_path, count=4, seed=0, image_size=(32, 32), fluid_fraction=0.5).read_text())
    assert len(datalist["training"]) == 4 and datalist["validation"] == [] and datalist["testing"] == []
    summary = json.loads((tmp_path / "synthesis.json").read_text())
    assert summary["split_counts"] == {"training": 4, "validation": 0, "testing": 0}
    assert [d["split"] for d in summary["images"]] == ["training"] * 4


# ---- boolean fluid switch, PNG bytes without metadata, progress logging ----


def test_with_fluid_switch_and_boolean_fluid():
    for seed in range(6):
        _, mask, info = render_bscan(np.random.default_rng(seed), (32, 40), with_fluid=True, return_info=True)
        assert info["fluid"] in FLUID_TYPES and mask.sum() > 0
        _, mask, info = render_bscan(np.random.default_rng(seed), (32, 40), with_fluid=False, return_info=True)
        assert info["fluid"] == "none" and mask.sum() == 0
        # positional boolean = keyword switch, same generator draws
        positional = render_bscan(np.random.default_rng(seed), (32, 40), True)
        keyword = render_bscan(np.random.default_rng(seed), (32, 40), with_fluid=True)
        assert all(np.array_equal(a, b) for a, b in zip(positional, keyword))
    # fluid_fraction does not override an explicit switch
    _, mask = render_bscan(np.random.default_rng(0), (32, 32), with_fluid=True, fluid_fraction=0.0)
    assert mask.any()
    with pytest.raises(ValueError, match="not both"):
        render_bscan(np.random.default_rng(0), (32, 32), fluid="none", with_fluid=True)


def _png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append(data[pos + 4 : pos + 8].decode("ascii"))
        pos += 12 + length
    return chunks


def test_pngs_carry_no_metadata_and_progress_is_logged(tmp_path, caplog):
    with caplog.at_level("INFO", logger="custom_components.oct.synthetic"):
        synthesize_oct_dataset(tmp_path, count=20, seed=1, image_size=(32, 32))
    for folder in ("images", "masks"):
        for path in sorted((tmp_path / folder).iterdir()):
            # no tEXt/tIME/pHYs chunks: bytes depend on the pixels only
            assert set(_png_chunks(path.read_bytes())) == {"IHDR", "IDAT", "IEND"}, path
    progress = [r.getMessage() for r in caplog.records if "B-scans" in r.getMessage()]
    assert progress[-1].endswith("20/20") and 5 <= len(progress) <= 11


def _disk_full_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th ``Image.save`` write the start of a PNG, then fail as on a full disk."""
    save, calls = Image.Image.save, []

    def failing(image, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == call:
            with open(fp, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n")
            raise OSError("No space left on device")
        return save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing)


def test_a_generation_that_fails_half_way_leaves_no_datalist_and_no_torn_scan(tmp_path, monkeypatch):
    synthesize_oct_dataset(tmp_path, count=2, seed=0, image_size=(16, 16))  # an earlier data set in the same folder
    _disk_full_at(monkeypatch, 4)  # the mask of the second B-scan
    with pytest.raises(OSError, match="No space"):
        synthesize_oct_dataset(tmp_path, count=4, seed=1, image_size=(16, 16))
    # the old datalist and record are gone (the folder no longer holds a complete data set), no new ones came
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "masks"]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["oct_00000.png", "oct_00001.png"]  # the old one
    for path in [*(tmp_path / "images").iterdir(), *(tmp_path / "masks").iterdir()]:
        with Image.open(path) as image:
            image.load()


def test_prepare_dataset_never_takes_a_failed_generation_for_a_data_set(tmp_path, monkeypatch):
    from custom_components.core.synthetic import prepare_dataset

    _disk_full_at(monkeypatch, 3)
    with pytest.raises(OSError, match="No space"):
        prepare_dataset(tmp_path / "data", synthesize_oct_dataset, synthetic_count=4, image_size=(16, 16))
    assert list(tmp_path.iterdir()) == []  # neither the data folder nor the one it was built in
    monkeypatch.undo()
    datalist = json.loads(Path(prepare_dataset(tmp_path / "data", synthesize_oct_dataset, 4, image_size=(16, 16))).read_text())
    entries = [e for section in datalist.values() for e in section]
    assert len(entries) == 4  # the group is a name, not a file
    assert all((tmp_path / "data" / e[key]).is_file() for e in entries for key in ("image", "label"))


def test_difficulty_makes_the_fluid_smaller_and_closer_to_the_tissue_around_it():
    """Difficulty 2.5 against 1 over the same seeds: fewer fluid pixels over a few scans, and the fluid's
    reflectivity moved toward the ONL's (0.30) by 1 - 1/difficulty of the way; difficulty 1 is the default scan."""
    pixels = {1.0: 0, 2.5: 0}
    for seed in range(6):
        default = render_bscan(np.random.default_rng(seed), (128, 128), fluid="intraretinal")
        for difficulty in pixels:
            image, mask = render_bscan(np.random.default_rng(seed), (128, 128), fluid="intraretinal",
                                       difficulty=difficulty)  # fmt: skip
            if difficulty == 1.0:
                assert np.array_equal(image, default[0]) and np.array_equal(mask, default[1])
            pixels[difficulty] += int(mask.sum())
    assert pixels[2.5] < 0.5 * pixels[1.0]
    assert _fluid_reflectivity(0.05, 1.0) == 0.05
    assert _fluid_reflectivity(0.05, 2.0) == pytest.approx(0.175)  # half-way to 0.30
    assert _fluid_reflectivity(0.05, 0.5) == 0.0  # easier: darker, never below 0


def test_a_difficulty_that_is_not_positive_is_refused(tmp_path):
    with pytest.raises(ValueError, match="difficulty must be a finite positive number, got 0"):
        render_bscan(np.random.default_rng(0), (32, 32), difficulty=0)
    with pytest.raises(ValueError, match="difficulty must be a finite positive number, got -2"):
        synthesize_oct_dataset(tmp_path / "x", count=2, image_size=(32, 32), difficulty=-2)
    assert not (tmp_path / "x").exists()


# ---- pigment epithelial detachment and typed masks (0 background, 1 IRF, 2 SRF, 3 PED) ----

# SHA-256 over "name sha256" lines of every image, mask and datalist.json of a binary data set written with the
# default arguments (count=8, seed=21, 40 x 56: none, intraretinal, subretinal and both among them), computed with
# the generator as it was before PED and typed masks (commit f7bd841; numpy 1.26.4, scipy 1.17.1, Pillow 13.0.0,
# x86-64). It pins that the binary path draws the same numbers and computes the same values as that generator.
PRE_TYPED_DATASET_SHA = "abac4fa7ae10ac00ca34049c268d784b9b9fca10d30e2f171e1e32bca399a5c6"


def _type_pixels(mask: np.ndarray) -> dict[str, int]:
    """Pixels of each fluid type in a typed mask (RETOUCH's values)."""
    return {name: int((mask == value).sum()) for name, value in (("IRF", 1), ("SRF", 2), ("PED", 3))}


def test_binary_data_set_is_the_pre_typed_generators_byte_for_byte(tmp_path):
    synthesize_oct_dataset(tmp_path, count=8, seed=21, image_size=(40, 56))
    files = sorted((tmp_path / "images").iterdir()) + sorted((tmp_path / "masks").iterdir())
    digest = hashlib.sha256()
    for path in [*files, tmp_path / "datalist.json"]:
        digest.update(f"{path.relative_to(tmp_path)} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    assert digest.hexdigest() == PRE_TYPED_DATASET_SHA
    summary = json.loads((tmp_path / "synthesis.json").read_text())
    assert summary["typed_masks"] is False and summary["fluid_type_weights"] == DEFAULT_FLUID_TYPE_WEIGHTS


def test_typed_weights_cover_every_type_alone_and_together():
    assert set(DEFAULT_TYPED_WEIGHTS) == {t.value for t in FluidType} - {"none"}
    assert sum(DEFAULT_TYPED_WEIGHTS.values()) == pytest.approx(1.0)
    assert not any("ped" in name or name == "all" for name in DEFAULT_FLUID_TYPE_WEIGHTS)  # binary default: no PED
    drawn = set()
    for seed in range(60):
        _, _, info = render_bscan(np.random.default_rng(seed), (32, 32), with_fluid=True, typed=True, return_info=True)
        drawn.add(info["fluid"])
    assert {"ped", "subretinal+ped", "intraretinal+ped"} <= drawn  # typed scans draw from DEFAULT_TYPED_WEIGHTS


@pytest.mark.parametrize("fluid", ["intraretinal", "both", "ped", "subretinal+ped", "all"])
def test_a_typed_mask_labels_the_binary_masks_pixels_of_the_same_scan(fluid):
    for seed in range(3):
        image, mask = render_bscan(np.random.default_rng(seed), (64, 80), fluid=fluid)
        typed_image, typed, info = render_bscan(np.random.default_rng(seed), (64, 80), fluid=fluid, typed=True,
                                                return_info=True)  # fmt: skip
        assert np.array_equal(typed_image, image)  # typed changes the mask, not the scan
        assert typed.dtype == np.uint8 and set(np.unique(typed)) <= {0, 1, 2, 3}
        assert np.array_equal(typed > 0, mask == 1)
        assert info["type_pixels"] == _type_pixels(typed)
        assert info["fluid_pixels"] == int(mask.sum())


def test_each_type_lies_where_it_lives():
    """PED between the lifted RPE and Bruch's membrane, darker than that RPE band; SRF above the PED in every
    column; IRF inside the retina, above the RPE."""
    rows = np.arange(128)[:, None]
    for seed in range(4):
        for fluid in ("ped", "subretinal+ped", "all"):
            image, mask, info = render_bscan(np.random.default_rng(seed), (128, 128), fluid=fluid, typed=True,
                                             return_info=True)  # fmt: skip
            ped, srf, irf = mask == 3, mask == 2, mask == 1
            r, c = np.nonzero(ped)
            assert r.size and np.all(r > info["rpe_bottom"][c] - 1) and np.all(r < info["bruch"][c] + 1)
            lifted = ped.any(axis=0)
            assert np.all(info["bruch"][lifted] - info["rpe_bottom"][lifted] > 0)
            rpe = (rows >= info["rpe_top"] + 0.5) & (rows < info["rpe_bottom"] - 0.5) & lifted
            assert image[ped].mean() + 40 < image[rpe].mean()  # dark (serous) or medium (fibrovascular)
            for column in np.nonzero(lifted & srf.any(axis=0))[0]:
                assert np.nonzero(srf[:, column])[0].max() < np.nonzero(ped[:, column])[0].min()
            r, c = np.nonzero(irf)
            assert np.all(r > info["ilm"][c]) and np.all(r < info["rpe_top"][c])
            assert (r.size > 0) == (fluid == "all") and srf.any() == (fluid != "ped")
            assert info["ped"] in ("serous", "fibrovascular")


def test_a_fibrovascular_detachment_is_brighter_than_a_serous_one():
    means = {"serous": [], "fibrovascular": []}
    for seed in range(10):
        image, mask, info = render_bscan(np.random.default_rng(seed), (128, 128), fluid="ped", typed=True,
                                         return_info=True)  # fmt: skip
        means[info["ped"]].append(image[mask == 3].mean())
    assert means["serous"] and means["fibrovascular"]
    assert np.mean(means["serous"]) + 20 < np.mean(means["fibrovascular"])


@pytest.mark.parametrize("size", [(16, 16), (32, 48)])
def test_tiny_typed_scans_keep_their_fluid(size):
    for seed in range(6):
        for fluid in ("ped", "subretinal+ped", "all"):
            _, mask, info = render_bscan(np.random.default_rng(seed), size, fluid=fluid, typed=True, return_info=True)
            assert (mask == 3).any() and set(np.unique(mask)) <= {0, 1, 2, 3}, (seed, fluid)
            assert np.all(info["rpe_bottom"] <= info["bruch"])


def test_typed_data_set_files_and_record_agree(tmp_path):
    root = tmp_path / "typed"
    synthesize_oct_dataset(root, count=10, seed=3, image_size=(48, 64), fluid_fraction=0.8, typed_masks=True)
    summary = json.loads((root / "synthesis.json").read_text())
    assert summary["typed_masks"] is True and summary["fluid_type_weights"] == DEFAULT_TYPED_WEIGHTS
    assert summary["mask_values"] == {"IRF": 1, "SRF": 2, "PED": 3}
    shown = {"IRF": 0, "SRF": 0, "PED": 0}
    for detail in summary["images"]:
        values = np.asarray(Image.open(root / detail["label"]))
        assert set(np.unique(values)) <= {0, 1, 2, 3}
        pixels = _type_pixels(values)
        assert detail["type_pixels"] == pixels and detail["fluid_pixels"] == int((values > 0).sum())
        assert detail["types"] == [name for name, n in pixels.items() if n]
        assert (detail["fluid"] == "none") == (not detail["types"])
        for name in detail["types"]:
            shown[name] += 1
    assert summary["type_counts"] == shown and all(shown.values())  # every type in 8 fluid scans of these weights
    again = tmp_path / "again"
    synthesize_oct_dataset(again, count=10, seed=3, image_size=(48, 64), fluid_fraction=0.8, typed_masks=True)
    assert _digest(root) == _digest(again)


def test_binary_masks_can_hold_ped_too(tmp_path):
    synthesize_oct_dataset(tmp_path, count=3, seed=0, image_size=(48, 64), fluid_fraction=1.0,
                           fluid_type_weights={"ped": 1.0})  # fmt: skip
    summary = json.loads((tmp_path / "synthesis.json").read_text())
    assert summary["mask_values"] == {"fluid": 255} and summary["type_counts"]["PED"] == 3
    for detail in summary["images"]:
        values = np.asarray(Image.open(tmp_path / detail["label"]))
        assert set(np.unique(values)) == {0, 255} and detail["types"] == ["PED"]
        assert detail["type_pixels"]["PED"] == int((values == 255).sum())


def test_bad_typed_arguments_raise_value_error_naming_them(tmp_path):
    with pytest.raises(ValueError, match="typed must be True or False, got 'yes'"):
        render_bscan(np.random.default_rng(0), (32, 32), typed="yes")
    with pytest.raises(ValueError, match="typed_masks must be True or False, got 1"):
        synthesize_oct_dataset(tmp_path / "x", count=2, image_size=(32, 32), typed_masks=1)
    with pytest.raises(ValueError, match=r"unknown fluid types \['PED'\].*'subretinal\+ped'"):
        synthesize_oct_dataset(tmp_path / "x", count=2, image_size=(32, 32), typed_masks=True,
                               fluid_type_weights={"PED": 1.0})  # fmt: skip
    with pytest.raises(ValueError, match="'irf' is not a valid value"):  # fluid names a FluidType, not a class
        render_bscan(np.random.default_rng(0), (32, 32), fluid="IRF")
    assert not (tmp_path / "x").exists()
