"""The procedural concept dataset: determinism, labels, drawing, export, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from circuitsviz.data import ImageFolderDataset, open_source, pil_to_tensor
from circuitsviz.data.procedural import CONCEPTS, ConceptDataset, export, preview_sheet
from circuitsviz.errors import BadInputError

K = len(CONCEPTS)


def test_same_seed_and_index_give_identical_image_in_any_order_and_any_length():
    a = ConceptDataset(n=40, seed=7)
    b = ConceptDataset(n=1000, seed=7)
    later = [b[i] for i in (30, 5, 17)]  # rendered out of order, after other images
    for (img_b, lab_b), i in zip(later, (30, 5, 17)):
        img_a, lab_a = a[i]
        assert torch.equal(img_a, img_b) and lab_a == lab_b


def test_different_seed_gives_different_images():
    a, b = ConceptDataset(n=K, seed=0), ConceptDataset(n=K, seed=1)
    assert all(not torch.equal(a[i][0], b[i][0]) for i in range(K))
    assert not torch.equal(a[0][0], a[1][0])


def test_every_block_of_len_concepts_holds_each_concept_once():
    ds = ConceptDataset(n=4 * K, seed=3)
    labels = [ds.label(i) for i in range(len(ds))]
    for block in range(4):
        assert sorted(labels[block * K:(block + 1) * K]) == list(range(K))
    assert labels[:K] != labels[K:2 * K]  # shuffled per block, not a fixed cycle


def test_labels_are_named_concepts_including_part_sharing_pairs():
    ds = ConceptDataset(n=10)
    assert ds.classes == CONCEPTS and len(CONCEPTS) >= 12 and len(set(CONCEPTS)) == len(CONCEPTS)
    for name in ("face", "car", "wheel", "rings", "star", "checkerboard", "blob",
                 "grating_horizontal", "grating_vertical", "grating_diagonal"):
        assert name in CONCEPTS


def test_item_is_the_loaded_image_as_float_tensor_of_configured_size():
    for size in (64, 32):
        ds = ConceptDataset(n=5, seed=2, size=size)
        image, label = ds[4]
        assert image.shape == (3, size, size) and image.dtype == torch.float32
        assert 0 <= float(image.min()) and float(image.max()) <= 1
        assert ds.image_id(4) == "4" and ds.index_of("4") == 4 and 0 <= label < K
        assert torch.equal(pil_to_tensor(ds.load_image("4")), image)


def test_bad_index_and_image_id_are_rejected():
    ds = ConceptDataset(n=5)
    with pytest.raises(IndexError):
        ds[5]
    assert torch.equal(ds[-1][0], ds[4][0])
    with pytest.raises(BadInputError, match="'9'"):
        ds.load_image("9")
    with pytest.raises(BadInputError):
        ConceptDataset(n=0)


def test_spec_reopens_the_same_dataset():
    ds = ConceptDataset(n=30, seed=5, size=48)
    again = open_source(ds.spec())
    assert ds.spec() == {"kind": "procedural", "n": 30, "seed": 5, "size": 48}
    assert torch.equal(again[29][0], ds[29][0]) and len(again) == 30


def _oriented_power(image: torch.Tensor) -> tuple[float, float]:
    """Spectral power within 30 degrees of the vertical and of the horizontal frequency axis.

    Horizontal stripes vary along y, so their power lies near the vertical axis (k_x ~ 0).
    Low frequencies (background, outline) are left out; white noise adds equally to both.
    """
    g = image - image.mean((1, 2), keepdim=True)  # per channel: stripes may differ in hue, not brightness
    p = torch.fft.fftshift(torch.fft.fft2(g).abs() ** 2, dim=(1, 2)).sum(0)
    k = torch.arange(g.shape[1]) - g.shape[1] // 2
    ky, kx = torch.meshgrid(k, k, indexing="ij")
    angle = torch.rad2deg(torch.atan2(ky.abs().float(), kx.abs().float()))  # 90 = vertical axis
    high = (ky ** 2 + kx ** 2) >= 9
    return float(p[high & (angle > 60)].sum()), float(p[high & (angle < 30)].sum())


def test_gratings_run_in_the_orientation_their_names_say():
    ds = ConceptDataset(n=6 * K, seed=11)
    seen = set()
    for i in range(len(ds)):
        image, label = ds[i]
        name = CONCEPTS[label]
        if name.startswith("grating"):
            vertical_axis, horizontal_axis = _oriented_power(image)
            ratio = vertical_axis / horizontal_axis
            expected = {"grating_horizontal": ratio > 2, "grating_vertical": ratio < 0.5,
                        "grating_diagonal": 0.5 < ratio < 2}
            assert expected[name], (i, name, ratio)
            seen.add(name)
    assert len(seen) == 3


def test_object_stands_out_from_background():
    # The object's colours are chosen far from the background's; its pixels must differ from the
    # image border (background there, mostly) in a sizeable patch.
    ds = ConceptDataset(n=2 * K, seed=4)
    for i in range(len(ds)):
        image = ds[i][0]
        border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], 1).median(1).values
        far = (image - border[:, None, None]).norm(dim=0) > 0.25
        assert far.float().mean() > 0.03, (i, CONCEPTS[ds.label(i)])


def test_export_is_an_image_folder_read_back_with_the_same_labels_and_pixels(tmp_path):
    ds = ConceptDataset(n=2 * K, seed=9)
    export(tmp_path, n=2 * K, seed=9)
    folder = ImageFolderDataset(tmp_path, size=64)
    assert sorted(folder.classes) == sorted(CONCEPTS) and len(folder) == 2 * K
    for j in range(len(folder)):
        image, label = folder[j]
        concept, name = folder.image_id(j).split("/")
        i = int(name.removesuffix(".png"))
        assert folder.classes[label] == concept == CONCEPTS[ds.label(i)]
        assert torch.equal(image, ds[i][0])  # PNG is lossless


def test_preview_sheet_has_one_labelled_row_per_concept():
    from circuitsviz.data.procedural import label_width

    sheet = preview_sheet(per_concept=3, size=32)
    left = label_width()
    assert sheet.size == (left + 3 * 32, K * 32) and left > 2 * 4
    rows = np.asarray(sheet).reshape(K, 32, left + 3 * 32, 3)
    assert all(rows[k][:, left:].std() > 0 for k in range(K))  # every cell was filled
    ds = ConceptDataset(n=K * 3, seed=0, size=32)
    first = next(i for i in range(len(ds)) if ds.label(i) == 0)
    assert np.array_equal(rows[0][:, left:left + 32], np.asarray(ds.load_image(str(first))))
    labels = [rows[k][:, :left] for k in range(K)]
    for k, strip in enumerate(labels):
        dark = (strip.max(axis=2) < 128)
        assert dark.any(), f"no label on the {CONCEPTS[k]} row"              # black text on white
        assert dark[:, : 4].sum() == 0 and (strip[~dark] > 128).all()        # a margin, then only the name
    assert len({s.tobytes() for s in labels}) == K                            # each row names its own concept
    # the longest name fits in its column: its last dark pixel is before the right margin
    widest = max(range(K), key=lambda k: len(CONCEPTS[k]))
    assert np.nonzero((labels[widest].max(axis=2) < 128).any(axis=0))[0].max() < left - 2


def test_cli_data_export_writes_concept_folders(tmp_path, capsys):
    from circuitsviz.cli import main

    assert main(["data", "export", "--n", str(K), "--out", str(tmp_path / "d"), "--seed", "2", "--size", "32"]) == 0
    pngs = sorted((tmp_path / "d").rglob("*.png"))
    assert len(pngs) == K and {p.parent.name for p in pngs} == set(CONCEPTS)
    assert f"wrote {K} images" in capsys.readouterr().out


def test_cli_data_preview_writes_the_labelled_sheet(tmp_path, capsys):
    from circuitsviz.cli import main

    assert main(["data", "preview", "--per-concept", "2", "--size", "16", "--seed", "1",
                 "--out", str(tmp_path / "p.png")]) == 0
    written = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    assert np.array_equal(written, np.asarray(preview_sheet(per_concept=2, seed=1, size=16)))
    assert f"wrote {tmp_path / 'p.png'}" in capsys.readouterr().out
