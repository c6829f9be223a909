"""The decoded-once pipeline (reid/pipeline.py) against torchvision's per-picture transforms: the same
pixels for the same random choices, the same distributions of choices, the same batches in one or two
processes, and training with it resumes bit-identically."""
import os

import numpy as np
import pytest
import scipy.stats
import torch
import torchvision.transforms.functional as TF
from PIL import Image

import train
from conftest import run_cli
from random_erasing import RandomErasing
from reid import pipeline
from reid.distributed import World
from reid.images import IMAGENET_MEAN, IMAGENET_STD, check_images, image_folder, image_transforms, open_rgb
from utils import UserError
from test_train import FAST, in_tmp, same_weights, weights  # noqa: F401  (in_tmp is a fixture)

SIZE = (48, 24)


def per_picture(picture, choice):
    """What layumi's transforms make of one uint8 picture with the crop, flip and erasing of ``choice``."""
    image = TF.to_pil_image(picture)
    image = TF.crop(TF.pad(image, pipeline.PAD), int(choice.top), int(choice.left), *SIZE)
    image = TF.hflip(image) if choice.flip else image
    tensor = TF.normalize(TF.to_tensor(image), IMAGENET_MEAN, IMAGENET_STD)
    if choice.erase:
        top, left, height, width = choice.erase_box.tolist()
        tensor[:, top:top + height, left:left + width] = 0.0
    return tensor


def test_the_same_choices_give_the_per_picture_pipelines_pixels():
    generator = torch.Generator().manual_seed(0)
    pictures = torch.randint(0, 256, (16, 3, *SIZE), dtype=torch.uint8, generator=generator)
    choice = pipeline.draw_augmentation(16, SIZE, 0.5, generator)
    assert 0 < int(choice.flip.sum()) < 16 and 0 < int(choice.erase.sum()) < 16   # both branches are seen
    batch = pipeline.apply_augmentation(pictures, choice)
    for index in range(16):
        assert torch.equal(batch[index], per_picture(pictures[index], choice[index])), index


def classic_choices(count, seed):
    """Crop offsets, flips and erased rectangles as torchvision's RandomCrop/Flip and RandomErasing draw them."""
    from torchvision import transforms

    torch.manual_seed(seed)
    padded = Image.new("RGB", (SIZE[1] + 2 * pipeline.PAD, SIZE[0] + 2 * pipeline.PAD))
    eraser = RandomErasing(probability=0.5, mean=[0.0, 0.0, 0.0])
    rows = []
    for _ in range(count):
        top, left, _, _ = transforms.RandomCrop.get_params(padded, SIZE)
        flip = bool(torch.rand(1) < 0.5)
        erased = (eraser(torch.ones(1, *SIZE)) == 0)[0]
        box = (-1, -1, 0, 0)
        if erased.any():
            ys, xs = erased.nonzero(as_tuple=True)
            box = (int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1))
        rows.append((top, left, flip, erased.any().item(), *box))
    return np.array(rows, dtype=float)


def test_the_choices_follow_the_per_picture_distributions():
    count = 6000
    choice = pipeline.draw_augmentation(count, SIZE, 0.5, torch.Generator().manual_seed(1))
    ours = np.column_stack([choice.top, choice.left, choice.flip, choice.erase, choice.erase_box]).astype(float)
    theirs = classic_choices(count, seed=2)
    for column, name in enumerate(["crop top", "crop left"]):
        counts = np.bincount(ours[:, column].astype(int), minlength=2 * pipeline.PAD + 1)
        assert scipy.stats.chisquare(counts).pvalue > 1e-3, name   # uniform over 0..20, as RandomCrop
    for column, name in [(2, "flip"), (3, "erase")]:
        assert abs(ours[:, column].mean() - theirs[:, column].mean()) < 4 * np.sqrt(0.25 * 2 / count), name
    ours_erased, theirs_erased = ours[ours[:, 3] == 1], theirs[theirs[:, 3] == 1]
    for column, name in [(4, "box top"), (5, "box left"), (6, "box height"), (7, "box width")]:
        test = scipy.stats.ks_2samp(ours_erased[:, column], theirs_erased[:, column])
        assert test.pvalue > 1e-3, (name, test)
    area = lambda rows: rows[:, 6] * rows[:, 7]   # noqa: E731
    assert scipy.stats.ks_2samp(area(ours_erased), area(theirs_erased)).pvalue > 1e-3


def test_decoding_once_keeps_the_per_picture_resize(prepared_market):
    folder = image_folder(os.path.join(prepared_market, "val"))
    cache = pipeline.decode_all(folder.samples[:5], (256, 128), 0, torch.device("cpu"))
    resize = image_transforms((256, 128)).transforms[0]
    for picture, (path, _) in zip(cache, folder.samples[:5]):
        with Image.open(path) as image:
            assert torch.equal(picture, TF.pil_to_tensor(resize(image.convert("RGB"))))


def epoch(world, seed=0):
    pictures = torch.randint(0, 256, (40, 3, *SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(seed)
    batches = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(range(40), generator=generator), 8, True)
    loader = pipeline.DeviceBatches(pictures, [i // 4 for i in range(40)], batches, generator, 0.5, world)
    generator.manual_seed(seed)   # as train.py does at every epoch
    return list(loader)


def test_an_epoch_makes_its_constant_tensors_once_not_every_step(monkeypatch):
    """On CUDA every torch.tensor(..., device=) and as_tensor(..., device=) is a blocking host-to-device copy:
    an epoch of 5 steps makes the mean and std once, and moves each step's indices without a device= copy."""
    made, real_tensor, real_as_tensor = [], torch.tensor, torch.as_tensor

    def counting(real):
        def call(*args, **kwargs):
            made.append("device" in kwargs)
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(torch, "tensor", counting(real_tensor))
    monkeypatch.setattr(torch, "as_tensor", counting(real_as_tensor))
    steps = epoch(World())
    assert len(steps) == 5 and made.count(True) <= 3   # the labels once, the mean and std once


def test_an_epoch_depends_on_its_seed_and_not_on_the_number_of_processes():
    alone, again, other = epoch(World()), epoch(World()), epoch(World(), seed=1)
    assert len(alone) == 5 and all(torch.equal(a[0], b[0]) for a, b in zip(alone, again))
    assert not torch.equal(alone[0][0], other[0][0])
    halves = [epoch(World(rank, rank, 2)) for rank in range(2)]
    for step, (images, labels) in enumerate(alone):
        assert torch.equal(torch.cat([halves[0][step][0], halves[1][step][0]]), images)
        assert torch.equal(torch.cat([halves[0][step][1], halves[1][step][1]]), labels)


def test_training_on_the_device_pipeline_resumes_bit_identically(prepared_market, in_tmp, capsys):
    device = [*FAST, "--input_pipeline", "device", "--erasing_p", "0.5", "--data_dir", str(prepared_market)]
    whole = weights(in_tmp / train.main([*device, "--name", "whole", "--total_epoch", "2"]) / "net_last.pth")
    train.main([*device, "--name", "cut", "--total_epoch", "1"])
    code, out, err = run_cli(train.main, ["--name", "cut", "--resume", "--total_epoch", "2"], capsys)
    assert code == 0 and "epochs 2..2" in out, err
    assert same_weights(whole, weights(in_tmp / "model/cut/net_last.pth"))
    plain = weights(in_tmp / train.main([*FAST, "--data_dir", str(prepared_market), "--name", "plain",
                                         "--total_epoch", "2", "--erasing_p", "0.5"]) / "net_last.pth")
    assert not same_weights(whole, plain)   # the other pipeline draws other numbers: the flag took effect


def test_colour_jitter_has_no_device_version(capsys):
    with pytest.raises(SystemExit):
        train.resolve_options(train.build_parser(), ["--input_pipeline", "device", "--color_jitter"])
    assert "--color_jitter runs in the per-picture pipeline only" in capsys.readouterr().err


def test_a_16_bit_picture_keeps_its_shades_instead_of_turning_white(tmp_path):
    """PIL's convert("RGB") clips 16-bit values above 255; every loader keeps the top 8 bits instead."""
    shades = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (128, 1))
    os.makedirs(tmp_path / "0001")
    path = tmp_path / "0001" / "0001_c1s1_000001_00.png"
    Image.fromarray(shades).save(path)
    assert Image.open(path).mode == "I;16" and Image.open(path).convert("RGB").getextrema()[0] == (0, 255)
    expected = (shades >> 8).astype(np.uint8)
    assert (np.asarray(open_rgb(path))[..., 0] == expected).all()
    folder_picture = image_folder(str(tmp_path), TF.pil_to_tensor)[0][0]
    resized = pipeline.ResizedPictures([(str(path), 0)], (128, 64))[0][0]
    for picture in (folder_picture, resized):
        assert abs(picture.float().mean().item() - expected.mean()) < 2


def test_a_picture_beyond_pils_safe_size_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (64, 128)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)   # 8,192 pixels > twice the limit: PIL refuses it
    with pytest.raises(UserError) as caught:
        check_images([str(path)])
    assert "64 x 128 pixels, more than PIL decodes safely" in caught.value.what and "shrink it" in caught.value.fix
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_the_device_pipeline_decodes_each_training_picture_once_and_names_a_broken_one(tmp_path, monkeypatch):
    """With decoded_later the training pictures are not checked beforehand: decode_all reads them once and
    stops at a broken one with the same one line as the check (here, from its DataLoader worker)."""
    from argparse import Namespace

    from reid import images

    for split in ("train", "val"):
        for pid in ("0001", "0002"):
            os.makedirs(tmp_path / split / pid)
            Image.new("RGB", (8, 16), (40, 90, 200)).save(tmp_path / split / pid / f"{pid}_c1s1_000001_00.jpg")
    checked = []
    check = images.check_images
    monkeypatch.setattr(images, "check_images", lambda paths: checked.extend(paths) or check(paths))
    args = Namespace(data_dir=str(tmp_path), train_all=False, color_jitter=False, erasing_p=0, batchsize=2)
    train_set, _ = images.training_sets(args, (16, 8), decoded_later=True)
    assert checked and all("/val/" in path for path in checked)
    assert pipeline.decode_all(train_set.samples, (16, 8), 1, torch.device("cpu")).shape == (2, 3, 16, 8)
    (tmp_path / "train" / "0002" / "0002_c1s1_000001_00.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="0002_c1s1_000001_00.jpg"):
        pipeline.decode_all(train_set.samples, (16, 8), 1, torch.device("cpu"))
