"""Drawing for the toy dataset: a person's stable appearance and one camera's view of it.

``toy_data.py`` decides *what* to write (identities, cameras, file names); this module decides what
each 128x256 picture looks like. An identity is a set of cues -- clothing colours and pattern,
trousers/shorts/skirt, bag, hat, hair, body shape -- drawn from small palettes so that many people
share a colour and only the combination identifies them. A camera adds nuisances of its own:
background, colour cast, brightness, blur, noise, preferred viewpoint, and crop jitter per image.
Every function takes a ``numpy.random.Generator``; the same seed gives the same pixels.
"""
import re
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WIDTH, HEIGHT = 128, 256  # the default picture (width x height), twice Market-1501's 64x128
SUPERSAMPLE = 2           # draw at 2x and downsample: smooth edges at little cost


@dataclass(frozen=True)
class Style:
    """How a whole set looks, so that sets can differ as lab data does (toy_data.py's --size, --nuisance,
    --clutter). The defaults draw the practical's set; other values keep every identity and camera draw."""

    size: tuple = (WIDTH, HEIGHT)   # picture width, height
    nuisance: float = 1.0           # scales each camera's colour cast, brightness change, blur and noise
    clutter: int = 4                # at most this many objects in a background (at least one)


LOOK_DEFAULTS = {"size": f"{WIDTH}x{HEIGHT}", "nuisance": Style.nuisance, "clutter": Style.clutter}   # toy_data.py's flags


def add_look_arguments(parser):
    look = parser.add_argument_group("how the set looks (defaults: the practical's set)")
    look.add_argument("--size", default=LOOK_DEFAULTS["size"],
                      help="picture width x height; real Market-1501 crops are 64x128")
    look.add_argument("--nuisance", type=float, default=LOOK_DEFAULTS["nuisance"],
                      help="scale of each camera's colour cast, brightness change, blur and noise (0: none)")
    look.add_argument("--clutter", type=int, default=LOOK_DEFAULTS["clutter"],
                      help="at most this many objects in a picture's background")


def style_of(parser, args):
    """The Style that toy_data.py's --size, --nuisance and --clutter ask for (impossible values: parser.error)."""
    size = re.fullmatch(r"(\d+)x(\d+)", args.size)
    if not size or not (16 <= int(size[1]) <= 1024 and 32 <= int(size[2]) <= 2048):
        parser.error(f"--size {args.size}: pass WIDTHxHEIGHT, e.g. 64x128 (16 to 1024 wide, 32 to 2048 high)")
    if args.nuisance < 0 or args.clutter < 1:
        parser.error("--nuisance must be >= 0 and --clutter >= 1")
    return Style((int(size[1]), int(size[2])), args.nuisance, args.clutter)


def look_settings(args):
    """The look flags that differ from the defaults, for the set's manifest (the practical's set's stays as it was)."""
    return {key: getattr(args, key) for key, default in LOOK_DEFAULTS.items() if getattr(args, key) != default}

TOP_COLOURS = {
    "black": (28, 28, 32), "white": (226, 226, 220), "grey": (125, 125, 128), "red": (178, 34, 40),
    "blue": (40, 70, 170), "green": (40, 125, 62), "yellow": (222, 192, 52), "pink": (222, 132, 164),
    "purple": (112, 52, 134), "orange": (228, 122, 40),
}
BOTTOM_COLOURS = {
    "black": (30, 30, 34), "jeans": (52, 78, 128), "grey": (110, 110, 114), "beige": (196, 176, 138),
    "brown": (104, 72, 44), "white": (220, 220, 214),
}
HAIR_COLOURS = [(20, 16, 14), (70, 44, 24), (182, 150, 90), (150, 150, 150)]
SKIN_TONES = [(236, 200, 170), (206, 160, 120), (150, 100, 70), (96, 64, 44)]
PATTERNS = ["solid", "solid", "hstripes", "vstripes", "checks", "logo"]
BOTTOMS = ["trousers", "trousers", "shorts", "skirt"]
BAGS = ["none", "none", "backpack", "handbag"]
VIEWS = ["front", "back", "left", "right"]


@dataclass(frozen=True)
class Identity:
    """The appearance that stays the same for one person in every camera."""

    top: tuple
    top_second: tuple   # pattern colour
    pattern: str
    long_sleeves: bool
    bottom: tuple
    bottom_kind: str
    shoes: tuple
    hair: tuple
    skin: tuple
    bag: str
    bag_colour: tuple
    hat: tuple          # colour, or () for no hat
    height: float       # fraction of the box height the person fills
    girth: float        # torso width factor


@dataclass(frozen=True)
class Camera:
    """What one camera does to every picture it takes."""

    wall: tuple
    floor: tuple
    horizon: float       # fraction of the height where the floor starts
    gains: tuple         # colour cast, per channel
    brightness: float
    blur: float          # Gaussian radius in output pixels
    noise: float         # pixel noise standard deviation
    views: tuple         # probabilities of VIEWS
    scale: float         # typical person size in this camera's detections


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _jitter(rng, colour, amount=14):
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def make_identity(rng):
    """Draw one person's appearance; colours come from small palettes so they are shared."""
    top_names = list(TOP_COLOURS)
    top = _pick(rng, top_names)
    second = _pick(rng, [name for name in top_names if name != top])
    bottom = _pick(rng, list(BOTTOM_COLOURS))
    return Identity(
        top=_jitter(rng, TOP_COLOURS[top]), top_second=_jitter(rng, TOP_COLOURS[second]),
        pattern=_pick(rng, PATTERNS), long_sleeves=bool(rng.random() < 0.6),
        bottom=_jitter(rng, BOTTOM_COLOURS[bottom]), bottom_kind=_pick(rng, BOTTOMS),
        shoes=_jitter(rng, _pick(rng, [(25, 25, 25), (230, 230, 230), (120, 70, 40)])),
        hair=_pick(rng, HAIR_COLOURS), skin=_pick(rng, SKIN_TONES),
        bag=_pick(rng, BAGS), bag_colour=_jitter(rng, _pick(rng, list(TOP_COLOURS.values()))),
        hat=_jitter(rng, _pick(rng, list(TOP_COLOURS.values()))) if rng.random() < 0.2 else (),
        height=float(rng.uniform(0.80, 0.94)), girth=float(rng.uniform(0.85, 1.2)),
    )


def make_camera(rng, nuisance=1.0):
    """Draw one camera's scene and image-formation nuisances (``nuisance`` scales the latter)."""
    views = rng.dirichlet(np.full(len(VIEWS), 0.8))
    camera = Camera(
        wall=tuple(int(v) for v in rng.integers(40, 200, size=3)),
        floor=tuple(int(v) for v in rng.integers(50, 170, size=3)),
        horizon=float(rng.uniform(0.45, 0.75)),
        gains=tuple(float(g) for g in rng.uniform(0.78, 1.2, size=3)),
        brightness=float(rng.uniform(0.7, 1.25)),
        blur=float(rng.choice([0.0, 0.4, 0.8, 1.3])),
        noise=float(rng.uniform(2.0, 9.0)),
        views=tuple(float(v) for v in views),
        scale=float(rng.uniform(0.88, 1.0)),
    )
    if nuisance == 1.0:   # the practical's set, exactly as it has always been drawn
        return camera
    away = lambda value: float(1.0 + (value - 1.0) * nuisance)  # noqa: E731  (a deviation from neutral, scaled)
    return replace(camera, gains=tuple(away(g) for g in camera.gains), brightness=away(camera.brightness),
                   blur=camera.blur * nuisance, noise=camera.noise * nuisance)


def _background(rng, camera, style):
    """Wall and floor with a gradient and a few objects (benches, signs, other clutter)."""
    big_w, big_h = style.size[0] * SUPERSAMPLE, style.size[1] * SUPERSAMPLE
    image = Image.new("RGB", (big_w, big_h), camera.wall)
    draw = ImageDraw.Draw(image)
    horizon = int(big_h * (camera.horizon + rng.uniform(-0.05, 0.05)))
    draw.rectangle([0, horizon, big_w, big_h], fill=camera.floor)
    for _ in range(int(rng.integers(1, style.clutter + 1))):
        x0, y0 = rng.integers(-big_w // 4, big_w, size=1)[0], rng.integers(0, big_h, size=1)[0]
        w, h = rng.integers(big_w // 8, big_w // 2), rng.integers(big_h // 16, big_h // 4)
        shade = _jitter(rng, camera.wall if y0 < horizon else camera.floor, 45)
        draw.rectangle([int(x0), int(y0), int(x0 + w), int(y0 + h)], fill=shade)
    return image


def _torso_pattern(draw, box, person, unit):
    x0, y0, x1, y1 = box
    step = max(4, int(6 * unit))
    if person.pattern in ("hstripes", "checks"):
        for y in range(int(y0) + step, int(y1), 2 * step):
            draw.rectangle([x0, y, x1, y + step // 2 + 1], fill=person.top_second)
    if person.pattern in ("vstripes", "checks"):
        for x in range(int(x0) + step, int(x1), 2 * step):
            draw.rectangle([x, y0, x + step // 2 + 1, y1], fill=person.top_second)


def _draw_person(draw, person, view, box, rng):
    """Draw ``person`` seen from ``view`` inside ``box`` = (centre x, top y, height) in big pixels."""
    cx, top, height = box
    unit = height / 100.0              # one percent of the person's height
    side = view in ("left", "right")
    half = 13 * unit * person.girth * (0.6 if side else 1.0)
    neck, waist, knee, foot = top + 14 * unit, top + 50 * unit, top + 74 * unit, top + 96 * unit
    stride = rng.uniform(0, 7) * unit * (1.6 if side else 0.7)
    arm = 4.5 * unit
    leg_w = 5.5 * unit * person.girth

    def legs(colour, y_from, y_to):
        for offset in (-stride / 2 - 0.45 * half, stride / 2 + 0.45 * half - leg_w):
            draw.rectangle([cx + offset, y_from, cx + offset + leg_w, y_to], fill=colour)

    legs(person.skin, waist, foot)
    trouser_end = {"trousers": foot - 2 * unit, "shorts": knee - 4 * unit, "skirt": waist}[person.bottom_kind]
    legs(person.bottom, waist, trouser_end)
    if person.bottom_kind == "skirt":
        draw.polygon([(cx - half, waist), (cx + half, waist), (cx + 1.3 * half, knee), (cx - 1.3 * half, knee)],
                     fill=person.bottom)
    for offset in (-stride / 2 - 0.45 * half, stride / 2 + 0.45 * half - leg_w):
        draw.ellipse([cx + offset - unit, foot - 3 * unit, cx + offset + leg_w + 2 * unit, foot + unit],
                     fill=person.shoes)
    if person.bag == "backpack" and view != "front":
        bag_x = {"back": cx - 0.8 * half, "left": cx + 0.6 * half, "right": cx - 0.6 * half - 12 * unit}[view]
        draw.rectangle([bag_x, neck + 3 * unit, bag_x + (1.6 * half if view == "back" else 12 * unit),
                        waist - 4 * unit], fill=person.bag_colour)
    torso = (cx - half, neck, cx + half, waist)
    draw.rectangle(torso, fill=person.top)
    _torso_pattern(draw, torso, person, unit)
    if person.pattern == "logo" and view == "front":
        draw.rectangle([cx - 4 * unit, neck + 8 * unit, cx + 4 * unit, neck + 16 * unit], fill=person.top_second)
    if person.bag == "backpack" and view == "front":
        for strap_x in (cx - 0.6 * half, cx + 0.6 * half - 2 * unit):
            draw.rectangle([strap_x, neck, strap_x + 2 * unit, waist - 8 * unit], fill=person.bag_colour)
    swing = rng.uniform(-4, 4) * unit
    sleeve_end = waist - 4 * unit if person.long_sleeves else neck + 12 * unit
    for sign in ((-1, 1) if not side else (1,)):
        x = cx + sign * (half + arm / 2) if not side else cx - arm / 2 + swing
        draw.rectangle([x - arm / 2, neck + unit, x + arm / 2, waist - 2 * unit], fill=person.skin)
        draw.rectangle([x - arm / 2, neck + unit, x + arm / 2, sleeve_end], fill=person.top)
    if person.bag == "handbag":
        hand_x = cx + half + arm if not side else cx + swing
        draw.rectangle([hand_x - 4 * unit, waist - 6 * unit, hand_x + 5 * unit, waist + 6 * unit],
                       fill=person.bag_colour)
    head_r = 6.5 * unit
    head = [cx - head_r, top + unit, cx + head_r, top + unit + 2 * head_r]
    draw.ellipse(head, fill=person.skin if view != "back" else person.hair)
    if view != "back":
        draw.chord([head[0], head[1], head[2], head[1] + 1.4 * head_r], 180, 360, fill=person.hair)
    if person.hat:
        draw.rectangle([cx - 1.1 * head_r, top, cx + 1.1 * head_r, top + 0.7 * head_r], fill=person.hat)


def _camera_effects(image, rng, camera):
    """Colour cast, brightness, blur and noise of ``camera``, with a little per-picture variation."""
    if camera.blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(camera.blur))
    pixels = np.asarray(image, dtype=np.float32)
    gains = np.asarray(camera.gains, dtype=np.float32) * camera.brightness * rng.uniform(0.88, 1.12)
    pixels = pixels * gains + rng.normal(0.0, camera.noise, size=pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def render(rng, camera, person=None, crop="full", style=Style()):
    """One picture taken by ``camera``, of ``style.size`` (128x256 by default).

    ``person=None`` gives a false detection (background only, Market's ``0000``); ``crop="bad"``
    cuts the person badly, as Market's junk ``-1`` detections are.
    """
    image = _background(rng, camera, style)
    picture_w, picture_h = style.size
    if person is not None:
        height = picture_h * SUPERSAMPLE * person.height * camera.scale * rng.uniform(0.92, 1.06)
        cx = picture_w * SUPERSAMPLE / 2 + rng.uniform(-0.08, 0.08) * picture_w * SUPERSAMPLE
        top = (picture_h * SUPERSAMPLE - height) / 2 + rng.uniform(-0.04, 0.04) * picture_h * SUPERSAMPLE
        if crop == "bad":
            cx += rng.choice([-1, 1]) * rng.uniform(0.35, 0.5) * picture_w * SUPERSAMPLE
            top += rng.choice([-1, 1]) * rng.uniform(0.3, 0.5) * height
        view = VIEWS[int(rng.choice(len(VIEWS), p=camera.views))]
        _draw_person(ImageDraw.Draw(image), person, view, (cx, top, height), rng)
    image = image.resize((picture_w, picture_h), Image.BOX)
    return _camera_effects(image, rng, camera)
