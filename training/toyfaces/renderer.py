"""Procedural cartoon faces with known, continuous attributes: the offline stand-in for FFHQ.

Every face is drawn from a :class:`FaceParams` (all fields in [0, 1]) with Pillow on a canvas
``supersample`` times larger than the output, then box-filtered down (anti-aliasing), so the
same parameters always give the same pixels. The attribute cues are deliberately bold and
large-scale (white hair, thick wrinkles, a big mouth), because the teacher (a small StyleGAN2
trained by regression on these images) learns coarse structure long before fine lines.

Attributes (the labels, in this order, see :data:`ATTRIBUTES`): ``age`` (0 child .. 1 elderly:
rosy cheeks fade, hair greys to white and recedes, thick forehead/cheek/eye wrinkles, eye bags,
sagging jowls, paler duller skin), ``smile`` (0 frown .. 1 wide open laugh with teeth),
``hair_color`` (black, brown, auburn, blond), ``hair_style`` (crew cut .. long), ``skin_tone``
(light .. dark), ``eye_size``, ``glasses`` (drawn when >= 0.5, frames thicker as it grows),
``face_shape`` (narrow oval .. wide round) and ``background`` (hue from red through green to
violet). Nuisance factors (pose, scale, lighting, iris/shirt/frame colours) are not labels.

``params_from_z`` is the teacher's latent-to-face map: z is normalised by its RMS (as StyleGAN2's
mapping network does, so the generator sees exactly the information the renderer used) and
field i is the standard normal CDF of z_i, for the first :data:`NUM_PARAMS` dims; the rest of z
is unused.

The domain is *aligned* the way FFHQ is: by default the pose fields (:data:`POSE`: head shift,
rotation and scale) are held at their centre, so the eyes and the mouth sit at fixed positions
in every picture, as they do in FFHQ after its landmark alignment. ``aligned=False`` keeps the
pose jitter (the attribute model trains on it, to read unaligned faces too).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import astuple, dataclass, fields, replace

import numpy as np
from PIL import Image, ImageDraw

from core.errors import DistillError

ATTRIBUTES = (
    "age",
    "smile",
    "hair_color",
    "hair_style",
    "skin_tone",
    "eye_size",
    "glasses",
    "face_shape",
    "background",
)
NUISANCE = (
    "shift_x",
    "shift_y",
    "rotation",
    "scale",
    "light_angle",
    "light_strength",
    "brightness",
    "iris_color",
    "shirt_color",
    "frame_color",
)
POSE = ("shift_x", "shift_y", "rotation", "scale")  # held at 0.5 in the aligned domain
NUM_ATTRIBUTES = len(ATTRIBUTES)
NUM_PARAMS = len(ATTRIBUTES) + len(NUISANCE)
GLASSES_THRESHOLD = 0.5  # glasses are drawn when params.glasses >= this

_HAIR = np.array([(22, 18, 18), (68, 42, 28), (118, 72, 38), (170, 84, 36), (222, 182, 100)], np.float64)
_SKIN = np.array([(255, 226, 200), (236, 192, 158), (200, 146, 106), (146, 96, 64), (94, 62, 44)], np.float64)
_GREY = np.array((236, 236, 240), np.float64)
_IRIS = np.array([(60, 110, 170), (70, 130, 80), (110, 72, 40), (50, 35, 25)], np.float64)
_FRAMES = np.array([(20, 20, 24), (110, 60, 30), (170, 30, 40), (40, 60, 150)], np.float64)


@dataclass(frozen=True)
class FaceParams:
    """One face: 9 attributes (the labels) then 10 nuisance factors, every field in [0, 1]."""

    age: float = 0.5
    smile: float = 0.5
    hair_color: float = 0.5
    hair_style: float = 0.5
    skin_tone: float = 0.5
    eye_size: float = 0.5
    glasses: float = 0.0
    face_shape: float = 0.5
    background: float = 0.5
    shift_x: float = 0.5
    shift_y: float = 0.5
    rotation: float = 0.5
    scale: float = 0.5
    light_angle: float = 0.5
    light_strength: float = 0.5
    brightness: float = 0.5
    iris_color: float = 0.5
    shirt_color: float = 0.5
    frame_color: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not (isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0):
                raise DistillError(
                    f"FaceParams.{f.name}={v!r}: every face parameter must be a number in [0, 1]"
                )

    def labels(self) -> np.ndarray:
        """The attribute vector [NUM_ATTRIBUTES] float32, in :data:`ATTRIBUTES` order."""
        return np.array([getattr(self, n) for n in ATTRIBUTES], np.float32)

    def to_array(self) -> np.ndarray:
        return np.array(astuple(self), np.float64)

    def aligned(self) -> FaceParams:
        """The same face in the FFHQ-like canonical pose (every :data:`POSE` field at 0.5)."""
        return replace(self, **{name: 0.5 for name in POSE})

    @classmethod
    def from_array(cls, values: np.ndarray) -> FaceParams:
        values = np.clip(np.asarray(values, np.float64).ravel(), 0.0, 1.0)
        if values.size != NUM_PARAMS:
            raise DistillError(f"FaceParams needs {NUM_PARAMS} values, got {values.size}")
        return cls(*(float(v) for v in values))


def _normal_cdf(x: np.ndarray) -> np.ndarray:
    return np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in np.ravel(x)])


def params_from_z(z: np.ndarray, aligned: bool = True) -> FaceParams:
    """The teacher's map: RMS-normalise z (StyleGAN2's ``normalize_2nd_moment``), field i = Phi(z_i).

    ``aligned`` (default) holds the pose fields at the canonical pose; their dims of z are then unused.
    """
    z = np.asarray(z, np.float64).ravel()
    if z.size < NUM_PARAMS:
        raise DistillError(
            f"z has {z.size} dims; the renderer reads the first {NUM_PARAMS}, use z_dim >= {NUM_PARAMS}"
        )
    z = z / np.sqrt(np.mean(z * z) + 1e-8)
    params = FaceParams.from_array(_normal_cdf(z[:NUM_PARAMS]))
    return params.aligned() if aligned else params


def sample_z(seed: int, z_dim: int = 128) -> np.ndarray:
    """The latent of ``seed``: standard normal, NVlabs-style (``np.random.RandomState(seed).randn``)."""
    return np.random.RandomState(seed).randn(z_dim)


def sample_params(seed: int, z_dim: int = 128, aligned: bool = True) -> FaceParams:
    """Random face for ``seed``: attributes roughly uniform in [0, 1]; same as ``params_from_z(sample_z(seed))``."""
    return params_from_z(sample_z(seed, z_dim), aligned)


def _palette(table: np.ndarray, t: float) -> np.ndarray:
    x = float(np.clip(t, 0.0, 1.0)) * (len(table) - 1)
    i = min(int(x), len(table) - 2)
    return table[i] + (table[i + 1] - table[i]) * (x - i)


def _smoothstep(lo: float, hi: float, x: float) -> float:
    t = min(max((x - lo) / (hi - lo), 0.0), 1.0)
    return t * t * (3 - 2 * t)


def _rgb(c: np.ndarray) -> tuple[int, int, int]:
    c = np.clip(np.round(c), 0, 255).astype(int)
    return int(c[0]), int(c[1]), int(c[2])


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return a + (b - a) * t


def hair_rgb(p: FaceParams) -> np.ndarray:
    """Hair colour after greying with age (the boldest age cue)."""
    return _mix(_palette(_HAIR, p.hair_color), _GREY, 0.92 * _smoothstep(0.3, 0.9, p.age))


def skin_rgb(p: FaceParams) -> np.ndarray:
    """Skin colour after ageing: duller (desaturated towards its grey) and a little darker."""
    base = _palette(_SKIN, p.skin_tone)
    aged = _mix(base, np.full(3, base.mean()), 0.45) * 0.9
    return _mix(base, aged, _smoothstep(0.4, 1.0, p.age))


def background_rgb(p: FaceParams) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(0.78 * p.background, 0.45, 0.88)
    return np.array((r, g, b)) * 255


class _Canvas:
    """Drawing helpers in face units: (0, 0) is the face centre, 1 unit = ``unit`` pixels."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, cy: float, unit: float) -> None:
        self.draw, self.cx, self.cy, self.unit = draw, cx, cy, unit

    def xy(self, x: float, y: float) -> tuple[float, float]:
        return self.cx + x * self.unit, self.cy + y * self.unit

    def ellipse(
        self, x: float, y: float, rx: float, ry: float, fill=None, outline=None, width: float = 0
    ) -> None:
        x0, y0 = self.xy(x - rx, y - ry)
        x1, y1 = self.xy(x + rx, y + ry)
        w = max(1, round(width * self.unit)) if outline is not None else 0
        self.draw.ellipse((x0, y0, x1, y1), fill=fill, outline=outline, width=w)

    def polygon(self, pts: list[tuple[float, float]], fill) -> None:
        self.draw.polygon([self.xy(x, y) for x, y in pts], fill=fill)

    def line(self, pts: list[tuple[float, float]], fill, width: float) -> None:
        w = max(1, round(width * self.unit))
        self.draw.line([self.xy(x, y) for x, y in pts], fill=fill, width=w, joint="curve")
        r = w / 2
        for px, py in (self.xy(*pts[0]), self.xy(*pts[-1])):  # round caps
            self.draw.ellipse((px - r, py - r, px + r, py + r), fill=fill)

    def arc(
        self, x: float, y: float, rx: float, ry: float, a0: float, a1: float, fill, width: float, n: int = 16
    ) -> None:
        ts = np.linspace(math.radians(a0), math.radians(a1), n)
        self.line([(x + rx * math.cos(t), y + ry * math.sin(t)) for t in ts], fill, width)


def _draw_face(c: _Canvas, p: FaceParams) -> None:
    """Draw everything but the background, in face units (face half-height ~1)."""
    skin, hair = skin_rgb(p), hair_rgb(p)
    shade = skin * 0.62
    fw = 0.64 + 0.3 * p.face_shape  # face half-width
    fh = 1.04 - 0.12 * p.face_shape  # face half-height
    old = _smoothstep(0.45, 0.95, p.age)
    young = 1.0 - _smoothstep(0.05, 0.4, p.age)
    style = p.hair_style

    # hair behind the head: volume and length grow with hair_style
    if style > 0.25:
        s = (style - 0.25) / 0.75
        back_w = fw + 0.12 + 0.3 * s
        bottom = -0.2 + 1.9 * s
        c.ellipse(0, -0.25, back_w, 0.95, fill=_rgb(hair))
        c.polygon(
            [(-back_w, -0.25), (back_w, -0.25), (back_w * 0.98, bottom), (-back_w * 0.98, bottom)], _rgb(hair)
        )
        c.ellipse(0, bottom, back_w * 0.98, 0.12, fill=_rgb(hair))

    # neck and shirt
    shirt = np.array(colorsys.hsv_to_rgb(p.shirt_color, 0.55, 0.6)) * 255
    c.polygon([(-0.3, 0.6), (0.3, 0.6), (0.34, 1.35), (-0.34, 1.35)], _rgb(shade * 0.3 + skin * 0.7))
    c.ellipse(0, 1.75, 1.45, 0.55, fill=_rgb(shirt))
    if style > 0.6:  # long hair falls over the shoulders, in front of the shirt
        s = (style - 0.6) / 0.4
        for side in (-1, 1):
            x = side * (fw + 0.05)
            c.polygon(
                [
                    (x - 0.2, 0.0),
                    (x + 0.2, 0.0),
                    (x + 0.22 * side, 0.6 + 1.0 * s),
                    (x - 0.2 * side, 0.6 + 1.0 * s),
                ],
                _rgb(hair),
            )

    # ears, face and sagging jowls
    for side in (-1, 1):
        c.ellipse(side * fw, 0.05, 0.14, 0.22, fill=_rgb(skin))
    c.ellipse(0, 0, fw, fh, fill=_rgb(skin))
    jowl = 0.18 * old
    if jowl > 0:
        c.ellipse(0, 0.45 + 0.1 * old, fw * (0.86 + jowl), 0.5 + 0.08 * old, fill=_rgb(skin))

    # top hair: the hairline recedes with age, the fringe is lower for longer styles
    top_h = 0.42 + 0.18 * min(style, 0.6)
    recede = 0.3 * _smoothstep(0.7, 1.0, p.age)
    c.ellipse(0, -fh + 0.12 + recede * 0.7, fw + 0.06 + 0.08 * style, top_h * (1 - recede), fill=_rgb(hair))
    if style < 0.25:  # crew cut: a thin cap only, skin shows through at the temples
        c.ellipse(0, -fh + 0.5, fw * 0.92, 0.32, fill=_rgb(skin))

    # rosy cheeks of the young
    if young > 0.02:
        blush = _rgb(_mix(skin, np.array((235, 110, 120)), 0.55 * young))
        for side in (-1, 1):
            c.ellipse(side * 0.42 * fw / 0.82, 0.28, 0.17, 0.11, fill=blush)

    # wrinkles: thick forehead lines, nasolabial folds, crow's feet, eye bags
    wr = _smoothstep(0.42, 0.92, p.age)
    if wr > 0.02:
        col = _rgb(_mix(skin, np.array((90, 55, 40)), 0.25 + 0.55 * wr))
        width = 0.035 + 0.04 * wr
        for k in range(3):
            c.arc(0, -0.22 + 0.13 * k, 0.4, 0.12, 200, 340, col, width)
        for side in (-1, 1):
            c.arc(side * 0.12, 0.38, 0.28, 0.3, 180 if side > 0 else 0, 250 if side > 0 else -70, col, width)
            ex = side * 0.34
            for dy in (-0.07, 0.0, 0.07):
                c.line(
                    [(ex + side * 0.22, -0.03 + dy * 0.5), (ex + side * 0.33, -0.03 + dy * 1.6)],
                    col,
                    width * 0.8,
                )
            c.arc(ex, 0.1, 0.15, 0.07, 20, 160, col, width * 0.8)

    # eyes and brows
    er = 0.06 + 0.18 * p.eye_size
    iris = _rgb(_palette(_IRIS, p.iris_color))
    for side in (-1, 1):
        ex = side * 0.34
        c.ellipse(ex, -0.03, er * 1.15, er, fill=(250, 250, 250), outline=(40, 30, 30), width=0.02)
        c.ellipse(ex, -0.03, er * 0.62, er * 0.62, fill=iris)
        c.ellipse(ex, -0.03, er * 0.3, er * 0.3, fill=(10, 10, 10))
        by = -0.03 - er - 0.1
        c.arc(ex, by + 0.07, 0.2, 0.08, 200, 340, _rgb(hair * 0.85), 0.055)

    # nose
    c.arc(0, 0.16, 0.07, 0.06, 20, 160, _rgb(shade), 0.035)

    # mouth: a big curve, corners up for a smile; opens with teeth above smile 0.5
    mw = 0.26 + 0.26 * p.smile
    my = 0.5
    bend = (p.smile - 0.35) * 0.5  # corners higher than the centre when > 0
    opening = 0.32 * _smoothstep(0.5, 1.0, p.smile)
    xs = np.linspace(-1, 1, 21)
    centre = [my + bend * (1 - x * x) - bend * 0.5 for x in xs]
    lip = _rgb(_mix(skin, np.array((170, 50, 60)), 0.6))
    if opening > 0.01:
        upper = [(x * mw, y - 0.12 * opening * (1 - x * x)) for x, y in zip(xs, centre, strict=True)]
        lower = [(x * mw, y + opening * (1 - x * x)) for x, y in zip(xs, centre, strict=True)]
        c.polygon(upper + lower[::-1], (95, 20, 30))
        teeth = [(x, y + 0.4 * (ly - y)) for (x, y), (_, ly) in zip(upper, lower, strict=True)]
        c.polygon(upper + teeth[::-1], (248, 248, 240))
        c.line(upper, lip, 0.04)
        c.line(lower, lip, 0.05)
    else:
        c.line([(x * mw, y) for x, y in zip(xs, centre, strict=True)], lip, 0.1)

    # glasses
    if p.glasses >= GLASSES_THRESHOLD:
        g = (p.glasses - GLASSES_THRESHOLD) / (1 - GLASSES_THRESHOLD)
        frame = _rgb(_palette(_FRAMES, p.frame_color))
        gr = max(er * 1.3, 0.24)
        width = 0.045 + 0.05 * g
        for side in (-1, 1):
            c.ellipse(side * 0.34, -0.03, gr * 1.1, gr, outline=frame, width=width)
            c.line([(side * (0.34 + gr * 1.1), -0.06), (side * fw, -0.1)], frame, width)
        c.arc(0, -0.0, 0.34 - gr * 1.1, 0.06, 200, 340, frame, width)


def face_frame(p: FaceParams, size: int) -> tuple[float, float, float]:
    """(centre x, centre y, pixels per face unit) of ``p``'s face in a ``size`` px picture (before rotation)."""
    unit = size * 0.3 * (0.92 + 0.14 * p.scale)
    return size * (0.5 + 0.08 * (p.shift_x - 0.5)), size * (0.47 + 0.08 * (p.shift_y - 0.5)), unit


REGIONS = {"eyes": (-0.72, 0.72, -0.36, 0.3), "mouth": (-0.6, 0.6, 0.25, 0.9)}  # x0, x1, y0, y1 in face units


def region_boxes(size: int) -> dict[str, tuple[int, int, int, int]]:
    """Pixel boxes (y0, y1, x0, x1) of the eyes (with brows and glasses) and the mouth in the aligned pose."""
    cx, cy, unit = face_frame(FaceParams().aligned(), size)
    return {
        name: (
            int(cy + y0 * unit),
            int(math.ceil(cy + y1 * unit)),
            int(cx + x0 * unit),
            int(math.ceil(cx + x1 * unit)),
        )
        for name, (x0, x1, y0, y1) in REGIONS.items()
    }


def render(params: FaceParams, size: int = 128, supersample: int = 3) -> np.ndarray:
    """Draw ``params`` as a uint8 [size, size, 3] RGB image (deterministic, anti-aliased)."""
    if not isinstance(params, FaceParams):
        raise DistillError(f"render needs FaceParams, got {type(params).__name__}")
    if size < 16 or supersample < 1:
        raise DistillError(
            f"render size={size}, supersample={supersample}: need size >= 16 and supersample >= 1"
        )
    p = params
    big = size * supersample
    bg = background_rgb(p)
    im = Image.new("RGB", (big, big), _rgb(bg))
    cx, cy, unit = face_frame(p, big)
    _draw_face(_Canvas(ImageDraw.Draw(im), cx, cy, unit), p)
    angle = 16.0 * (p.rotation - 0.5)
    if abs(angle) > 1e-3:
        im = im.rotate(angle, resample=Image.BILINEAR, center=(cx, cy), fillcolor=_rgb(bg))
    if supersample > 1:
        im = im.reduce(supersample)
    x = np.asarray(im, np.float32)
    # lighting: a linear ramp across the image in a random direction plus an overall brightness
    t = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    a = 2 * math.pi * p.light_angle
    ramp = math.cos(a) * t[None, :] + math.sin(a) * t[:, None]
    gain = (0.9 + 0.2 * p.brightness) * (1.0 + 0.14 * p.light_strength * ramp)
    return np.clip(x * gain[..., None] + 0.5, 0, 255).astype(np.uint8)


def render_seed(seed: int, size: int = 128, z_dim: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 HWC, labels float32 [NUM_ATTRIBUTES]) of the face for ``seed``."""
    p = sample_params(seed, z_dim)
    return render(p, size), p.labels()
