"""Pictures in, tensors out: which files are pictures, the train/test transforms, folder loading and checks."""
import os

from utils import UserError


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")   # VIPeR is BMP


def is_image_file(filename):
    """True for the image types the datasets use; other files (e.g. Thumbs.db) are ignored."""
    return filename.lower().endswith(IMAGE_SUFFIXES)


def picture_names(folder):
    """The sorted names of the pictures directly in ``folder``; a link whose target is gone is one error line
    (the dataset was moved or half copied), not a crash later on."""
    names = sorted(name for name in os.listdir(folder) if is_image_file(name))
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            raise UserError(f"{path} is a link to {os.readlink(path)}, which does not exist",
                            "copy the picture it points to back, or delete the link")
    return names


SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")   # PIL's modes of 16-bit grayscale pictures


def open_rgb(path):
    """The picture at ``path`` as 8-bit RGB (PIL). A 16-bit picture (a PNG from a scientific camera) keeps its
    top 8 bits: PIL's own ``convert("RGB")`` clips every value above 255 and returns a white picture."""
    from PIL import Image

    with Image.open(path) as picture:
        if picture.mode in SIXTEEN_BIT:
            import numpy as np

            eight_bit = (np.asarray(picture, dtype=np.uint32) >> 8).astype(np.uint8)
            return Image.fromarray(eight_bit).convert("RGB")
        return picture.convert("RGB")


def check_images(paths):
    """Decode every picture once before the slow work; the first unreadable one is named."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
        except Image.DecompressionBombError:
            raise UserError(f"{path} is {image_size(path)}, more than PIL decodes safely",
                            "shrink it first: a person crop needs a few hundred pixels a side (Market-1501's are "
                            "64x128)") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise unreadable(path, err) from None


def image_size(path):
    """'W x H pixels' of a picture, read from its header alone."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS, limit = None, Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as image:
            return f"{image.width} x {image.height} pixels"
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def unreadable(path, err):
    """The error for a picture that does not decode: it names the source file when prepare.py placed it."""
    from reid.datasets import source_picture

    origin = source_picture(path)
    if origin is None:
        return UserError(f"cannot read image {path} ({err})", "remove or replace that file")
    source, benchmark = origin
    root = os.path.dirname(os.path.dirname(source))
    return UserError(f"cannot read image {source} ({err}); {path} is its copy",
                     f"replace or remove {source}, then run python {benchmark.script} --download_path {root} --force")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def add_input_arguments(parser):
    """train.py's --norm_mean/--norm_std: the colour statistics the network normalises its pictures with."""
    for flag, values, what in (("norm_mean", IMAGENET_MEAN, "mean"), ("norm_std", IMAGENET_STD, "standard deviation")):
        parser.add_argument(f"--{flag}", type=float, nargs=3, default=list(values), metavar=("R", "G", "B"),
                            help=f"per-channel {what} of the pixel values (in [0, 1]) to normalise with; ImageNet's by "
                                 "default, the training set's as audit.py prints it")


def input_statistics(options, where="--norm_mean/--norm_std"):
    """(mean, std) a run normalises its pictures with (``options``: train.py's args or opts.yaml), or None
    for ImageNet's, which every stage applies anyway; one line for values that cannot be statistics."""
    mean, std = options.get("norm_mean", list(IMAGENET_MEAN)), options.get("norm_std", list(IMAGENET_STD))
    numbers = all(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)
                  for v in (mean, std))
    if not numbers or not all(0 <= m <= 1 for m in mean) or not all(0 < s <= 1 for s in std):
        raise UserError(f"{where}: norm_mean {mean} and norm_std {std} are not colour statistics",
                        "give three means within [0, 1] and three standard deviations within (0, 1], "
                        "as audit.py prints them")
    same = [float(m) for m in mean] == list(IMAGENET_MEAN) and [float(s) for s in std] == list(IMAGENET_STD)
    return None if same else (mean, std)


def image_transforms(size, train=False, color_jitter=False, erasing_p=0.0):
    """Test: Resize (bicubic) -> ToTensor -> Normalize. Training (layumi's recipe) adds Pad 10 ->
    RandomCrop -> HorizontalFlip [-> ColorJitter] before, and [RandomErasing] after."""
    from torchvision import transforms

    from random_erasing import RandomErasing

    steps = [transforms.Resize(tuple(size), interpolation=transforms.InterpolationMode.BICUBIC)]
    if train:
        steps += [transforms.Pad(10), transforms.RandomCrop(tuple(size)), transforms.RandomHorizontalFlip()]
        if color_jitter:
            steps.append(transforms.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0))
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and erasing_p > 0:
        steps.append(RandomErasing(probability=erasing_p, mean=[0.0, 0.0, 0.0]))
    return transforms.Compose(steps)


def image_folder(folder, transform=None):
    """torchvision's ImageFolder (sorted identity folders, sorted files) with one-line errors."""
    from torchvision.datasets import ImageFolder

    if not os.path.isdir(folder):
        raise UserError(f"{folder} does not exist", "pass the pytorch/ folder written by prepare.py")
    try:
        return ImageFolder(folder, transform, loader=open_rgb)
    except FileNotFoundError as err:   # an empty identity folder, or no picture at all
        raise UserError(f"{folder}: {err}", "rebuild it with prepare.py --force") from None


def training_sets(args, size, decoded_later=False):
    """train.py's ImageFolder train (or train_all) and val sets, checked before any training: folders,
    identities, batch size, pictures. ``args``: data_dir, train_all, color_jitter, erasing_p, batchsize.
    ``decoded_later``: the device pipeline's decode_all reads every training picture at once and is their
    check, so that they are not decoded twice at start-up; val's are checked here."""
    train_split = "train_all" if args.train_all else "train"
    train_set = image_folder(os.path.join(args.data_dir, train_split), image_transforms(
        size, train=True, color_jitter=args.color_jitter, erasing_p=args.erasing_p))
    val_set = image_folder(os.path.join(args.data_dir, "val"), image_transforms(size))
    if len(train_set.classes) < 2:
        raise UserError(f"{args.data_dir}/{train_split} holds {len(train_set.classes)} identity",
                        "a classifier needs at least 2 identities: check the dataset")
    if args.batchsize > len(train_set):
        raise UserError(f"--batchsize {args.batchsize} is larger than the {len(train_set)} training pictures",
                        f"pass --batchsize {len(train_set)} or less")
    unknown = sorted(set(val_set.classes) - set(train_set.classes))
    if unknown:
        raise UserError(f"val has identities that {train_split} lacks ({', '.join(unknown[:3])})",
                        "rebuild the folders with prepare.py --force")
    # val labels must be train's class indices even when val lacks an identity
    val_set.samples = [(path, train_set.class_to_idx[val_set.classes[t]]) for path, t in val_set.samples]
    val_set.targets = [t for _, t in val_set.samples]
    check_images([path for path, _ in ([] if decoded_later else train_set.samples) + val_set.samples])
    return train_set, val_set
