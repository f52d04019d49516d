"""The synthetic world: an image-text distribution whose joint density is known in closed form.

Generative model
----------------
Latent z = (shape, colour, size), Z = 4 * 4 * 2 = 32 values, indexed ``z = (shape * n_colours + colour) * n_sizes
+ size``, with a fixed non-uniform prior p(z). Caption templates t = 1..T with probabilities w_t; each maps a latent
to one string, ``caption(z, t)``. The vocabulary Y is the set of distinct strings and

    p(y|z)       = sum_t w_t [caption(z, t) == y]                    (Z, Y) table, rows sum to 1
    p_aligned(y) = sum_z p(z) p(y|z)

Misaligned pairs and placeholders carry "noise captions" from their own distribution b(y), as on web data where
such pairs mostly have boilerplate captions: with g = ``noise_generic_weight`` (default 0.7),

    b(y) = g [y == "an image"] + (1 - g) p_aligned(y)

(g = 0 is the older world in which noise captions followed p_aligned). Since the template whose text is "an image"
(``generic_template``) gives every latent that caption, b is p_aligned with the template weights replaced by
w^b_t = (1 - g) w_t + g [t == generic_template], which is how the sampler draws it. One pair (x, y) is drawn as

    aligned      prob 1-m-q   z ~ p(z), x ~ render(z), y ~ p(y|z)
    misaligned   prob m       z ~ p(z), x ~ render(z), y ~ b(y) independent of x
    placeholder  prob q       x ~ placeholder picture,   y ~ b(y)

Image classes c are the Z latents plus the placeholder, p(c) = (1-q) p(z) for a latent and q for the placeholder.
The rendering nuisance (position, shades, pixel noise) is independent of y given c, so every density ratio depends
on x only through its class:

    p(y)    = sum_c p(c) p(y|c) = (1-m-q) p_aligned(y) + (m+q) b(y)
    p(y|x)  = [(1-m-q) p(y|z) + m b(y)] / (1-q)                           x rendered from z
    p(y|x)  = b(y)                                                        x a placeholder
    r(c, y) = p(y|c)/p(y) = p(x|y)/p(x),        sum_c p(c) r(c, y) = 1 for every y

``log r`` is the pointwise mutual information of the pair (the nuisance cancels). It is not 0 for the placeholder
once g > 0: b puts more mass than p(y) on "an image" and less on every specific caption. Per-sample divergences:

    KL_image(c)  = KL(p(y|x) || p(y)) = sum_y p(y|c) log r(c, y)
    KLR_image(c) = KL(p(y) || p(y|x)) = sum_y p(y) (-log r(c, y))
    KL_text(y)   = KL(p(x|y) || p(x)) = sum_c p(c) r(c, y) log r(c, y)
    KLR_text(y)  = KL(p(x) || p(x|y)) = sum_c p(c) (-log r(c, y))

Specific captions ("a photo of a large red circle") come almost only from aligned pairs and have a large text KL;
the generic "an image" is emitted about equally by every image class and has a text KL near 0 (exactly 0 when
g = 0). So a caption-only statistic separates aligned pairs from misaligned and placeholder ones, as on web data.
In the arrays below the placeholder is latent index ``-1`` (``PLACEHOLDER``); internally it is class row ``Z`` of
the (Z+1, Y) tables.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from clip_assets.world import render as _render

PLACEHOLDER = -1
ATTRIBUTES = ("shape", "colour", "size")

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")
SHAPE_MARGINAL = (0.40, 0.30, 0.20, 0.10)
COLOUR_MARGINAL = (0.35, 0.30, 0.20, 0.15)
SIZE_MARGINAL = (0.60, 0.40)
TILT_AMPLITUDE, TILT_FREQUENCY, TILT_PHASE = 0.5, 1.7, 0.3
MISALIGNED_RATE = 0.10
PLACEHOLDER_RATE = 0.05
NOISE_GENERIC_WEIGHT = 0.7  # g: weight of the generic caption in the noise-caption distribution b(y)
GENERIC_CAPTION = "an image"
IMAGE_SIZE = 64


@dataclass(frozen=True)
class Template:
    """A caption template: ``text`` formatted with the latent's ``shape``, ``colour`` and ``size`` names."""

    name: str
    text: str
    prob: float


DEFAULT_TEMPLATES = (
    Template("full", "a photo of a {size} {colour} {shape}", 0.30),
    Template("colour_shape", "a photo of a {colour} {shape}", 0.25),
    Template("shape", "a photo of a {shape}", 0.15),
    Template("colour", "a photo of something {colour}", 0.15),
    Template("generic", "an image", 0.15),
)
DEFAULT_DOMAINS: dict[str, dict[str, str]] = {"red": {"colour": "red"}, "large": {"size": "large"}}


def default_prior() -> tuple[float, ...]:
    """p(z) ∝ p(shape) p(colour) p(size) (1 + A sin(F z + P)): non-uniform marginals times a fixed tilt in
    [1-A, 1+A] that couples the attributes (so p(z) is not a product), in latent-index order."""
    base = np.einsum("i,j,k->ijk", SHAPE_MARGINAL, COLOUR_MARGINAL, SIZE_MARGINAL).ravel()  # (Z,)
    z = np.arange(base.size)
    p = base * (1.0 + TILT_AMPLITUDE * np.sin(TILT_FREQUENCY * z + TILT_PHASE))
    return tuple(float(v) for v in p / p.sum())


@dataclass(frozen=True)
class PairSample:
    """Sampled pair labels (no pixels). ``latent`` is -1 for placeholders; ``caption`` indexes the vocabulary."""

    latent: np.ndarray  # (n,) int64
    template: np.ndarray  # (n,) int64, the template the caption was made with
    caption: np.ndarray  # (n,) int64
    is_misaligned: np.ndarray  # (n,) bool
    is_placeholder: np.ndarray  # (n,) bool


@dataclass(frozen=True)
class LabelledImages:
    """Rendered latent images with their latent index and class label (index into ``World.class_names``)."""

    images: np.ndarray  # (n, H, W, 3) uint8
    latent: np.ndarray  # (n,) int64
    label: np.ndarray  # (n,) int64


@dataclass(frozen=True)
class World:
    """Parameters of the synthetic world (see the module docstring) plus its exact density tables.

    ``World.default()`` is the world every drop uses unless told otherwise; ``to_dict``/``from_dict`` round-trip it
    through JSON (``world.json`` beside the drops).
    """

    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    sizes: tuple[str, ...]
    prior: tuple[float, ...]
    templates: tuple[Template, ...]
    misaligned_rate: float
    placeholder_rate: float
    image_size: int = IMAGE_SIZE
    domains: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    noise_generic_weight: float = NOISE_GENERIC_WEIGHT

    def __post_init__(self) -> None:
        for name, values, known in (
            ("shapes", self.shapes, _render.SHAPE_NAMES),
            ("colours", self.colours, _render.COLOUR_RGB),
            ("sizes", self.sizes, _render.SIZE_RADIUS),
        ):
            if not values or len(set(values)) != len(values) or any(v not in known for v in values):
                raise ValueError(f"{name} must be distinct names among {tuple(known)}, got {values!r}")
        prior = np.asarray(self.prior, dtype=np.float64)
        if prior.shape != (self.n_latents,) or np.any(prior <= 0) or abs(prior.sum() - 1.0) > 1e-9:
            raise ValueError(f"prior must be {self.n_latents} positive numbers summing to 1, got {self.prior!r}")
        probs = np.asarray([t.prob for t in self.templates], dtype=np.float64)
        if not self.templates or np.any(probs <= 0) or abs(probs.sum() - 1.0) > 1e-9:
            raise ValueError(f"template probabilities must be positive and sum to 1, got {probs.tolist()}")
        if len({t.name for t in self.templates}) != len(self.templates):
            raise ValueError(f"template names must be distinct, got {[t.name for t in self.templates]}")
        for t in self.templates:
            fields = {f for _, f, _, _ in string.Formatter().parse(t.text) if f is not None}
            if not fields <= set(ATTRIBUTES):
                raise ValueError(f"template {t.name!r} uses unknown fields {sorted(fields - set(ATTRIBUTES))}")
        m, q = self.misaligned_rate, self.placeholder_rate
        if not (0 <= m and 0 <= q and m + q < 1):
            raise ValueError(f"need 0 <= misaligned_rate, 0 <= placeholder_rate, sum < 1; got m={m}, q={q}")
        g = self.noise_generic_weight
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 <= g <= 1:
            raise ValueError(f"noise_generic_weight must be a number in [0, 1], got {g!r}")
        if g > 0 and self.generic_template is None:
            raise ValueError(
                f"noise_generic_weight {g} > 0 needs a template whose text is {GENERIC_CAPTION!r}, "
                f"got {[t.text for t in self.templates]}"
            )
        if self.image_size < 2 * max(_render.radius_px(s, self.image_size) for s in self.sizes) + 3:
            raise ValueError(f"image_size {self.image_size} is too small to hold the shapes")
        values = {"shape": self.shapes, "colour": self.colours, "size": self.sizes}
        for name, cond in self.domains.items():
            if not cond or any(a not in values or v not in values[a] for a, v in cond.items()):
                raise ValueError(f"domain {name!r} must map attributes {ATTRIBUTES} to known values, got {cond!r}")

    # ---------------------------------------------------------------- construction and serialisation

    @classmethod
    def default(cls) -> World:
        """The standard world: 4 shapes x 4 colours x 2 sizes, m = 0.10 misaligned, q = 0.05 placeholders, noise
        captions "an image" with probability g = 0.7 and otherwise from p_aligned."""
        return cls(
            shapes=SHAPES,
            colours=COLOURS,
            sizes=SIZES,
            prior=default_prior(),
            templates=DEFAULT_TEMPLATES,
            misaligned_rate=MISALIGNED_RATE,
            placeholder_rate=PLACEHOLDER_RATE,
            image_size=IMAGE_SIZE,
            domains={k: dict(v) for k, v in DEFAULT_DOMAINS.items()},
            noise_generic_weight=NOISE_GENERIC_WEIGHT,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters (floats round-trip exactly through ``json``)."""
        return {
            "shapes": list(self.shapes),
            "colours": list(self.colours),
            "sizes": list(self.sizes),
            "prior": list(self.prior),
            "templates": [{"name": t.name, "text": t.text, "prob": t.prob} for t in self.templates],
            "misaligned_rate": self.misaligned_rate,
            "placeholder_rate": self.placeholder_rate,
            "image_size": self.image_size,
            "domains": {k: dict(v) for k, v in self.domains.items()},
            "noise_generic_weight": self.noise_generic_weight,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> World:
        """Inverse of ``to_dict``. A ``world.json`` without ``noise_generic_weight`` predates that parameter and
        describes the world in which noise captions followed p_aligned, so it reads back with g = 0."""
        return cls(
            shapes=tuple(d["shapes"]),
            colours=tuple(d["colours"]),
            sizes=tuple(d["sizes"]),
            prior=tuple(float(v) for v in d["prior"]),
            templates=tuple(Template(t["name"], t["text"], float(t["prob"])) for t in d["templates"]),
            misaligned_rate=float(d["misaligned_rate"]),
            placeholder_rate=float(d["placeholder_rate"]),
            image_size=int(d["image_size"]),
            domains={k: dict(v) for k, v in d.get("domains", {}).items()},
            noise_generic_weight=float(d.get("noise_generic_weight", 0.0)),
        )

    # ---------------------------------------------------------------- latents, captions, labels

    @property
    def n_latents(self) -> int:
        return len(self.shapes) * len(self.colours) * len(self.sizes)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Zero-shot classes: the shapes. ``class_label`` gives each image's index into this tuple."""
        return self.shapes

    @cached_property
    def latent_attributes(self) -> np.ndarray:
        """(Z, 3) int64: (shape, colour, size) indices of each latent."""
        s, c, z = np.unravel_index(np.arange(self.n_latents), (len(self.shapes), len(self.colours), len(self.sizes)))
        return np.stack([s, c, z], axis=1).astype(np.int64)

    def latent_index(self, shape: str, colour: str, size: str) -> int:
        return (self.shapes.index(shape) * len(self.colours) + self.colours.index(colour)) * len(self.sizes) + (
            self.sizes.index(size)
        )

    def latent_names(self, z: int) -> dict[str, str]:
        """{"shape": ..., "colour": ..., "size": ...} of latent ``z``."""
        s, c, k = self.latent_attributes[z]
        return {"shape": self.shapes[s], "colour": self.colours[c], "size": self.sizes[k]}

    def caption_of(self, z_idx: int, template: int | str) -> str:
        """The caption that template ``template`` (index or name) gives latent ``z_idx``."""
        t = self.template_index(template) if isinstance(template, str) else template
        return self.templates[t].text.format(**self.latent_names(z_idx))

    @property
    def generic_template(self) -> int | None:
        """Index of the first template whose text is the generic caption "an image" (None if there is none)."""
        for i, t in enumerate(self.templates):
            if t.text == GENERIC_CAPTION:
                return i
        return None

    def template_index(self, name: str) -> int:
        for i, t in enumerate(self.templates):
            if t.name == name:
                return i
        raise KeyError(f"unknown template {name!r}; known: {[t.name for t in self.templates]}")

    @cached_property
    def caption_table(self) -> np.ndarray:
        """(T, Z) int64: vocabulary index of caption(z, t)."""
        index = {y: i for i, y in enumerate(self.vocabulary)}
        return np.array(
            [[index[self.caption_of(z, t)] for z in range(self.n_latents)] for t in range(len(self.templates))],
            dtype=np.int64,
        )

    @cached_property
    def vocabulary(self) -> tuple[str, ...]:
        """All distinct captions, in order of first appearance (template-major, then latent)."""
        seen: dict[str, None] = {}
        for t in range(len(self.templates)):
            for z in range(self.n_latents):
                seen.setdefault(self.caption_of(z, t), None)
        return tuple(seen)

    def caption_index(self, captions: Sequence[str]) -> np.ndarray:
        """Vocabulary indices of caption strings; KeyError for a caption outside the world."""
        index = self._vocabulary_index
        return np.array([index[y] for y in captions], dtype=np.int64)

    @cached_property
    def _vocabulary_index(self) -> dict[str, int]:
        return {y: i for i, y in enumerate(self.vocabulary)}

    def class_label(self, latent: np.ndarray | int) -> np.ndarray:
        """Shape index of each image (index into ``class_names``), -1 for placeholders."""
        latent = np.asarray(latent, dtype=np.int64)
        return np.where(latent < 0, -1, self.latent_attributes[np.maximum(latent, 0), 0])

    def domain_mask(self, name: str) -> np.ndarray:
        """(Z,) bool: which latents belong to target domain ``name`` (every listed attribute matches)."""
        if name not in self.domains:
            raise KeyError(f"unknown domain {name!r}; known: {sorted(self.domains)}")
        values = {"shape": self.shapes, "colour": self.colours, "size": self.sizes}
        mask = np.ones(self.n_latents, dtype=bool)
        for attr, value in self.domains[name].items():
            mask &= self.latent_attributes[:, ATTRIBUTES.index(attr)] == values[attr].index(value)
        return mask

    def in_domain(self, latent: np.ndarray | int, name: str) -> np.ndarray:
        """Membership of each image in target domain ``name``; placeholders are in no domain."""
        latent = np.asarray(latent, dtype=np.int64)
        return (latent >= 0) & self.domain_mask(name)[np.maximum(latent, 0)]

    # ---------------------------------------------------------------- exact densities

    @cached_property
    def p_z(self) -> np.ndarray:
        """(Z,) prior p(z)."""
        return np.asarray(self.prior, dtype=np.float64)

    @cached_property
    def p_y_given_z(self) -> np.ndarray:
        """(Z, Y) p(y|z) = sum_t w_t [caption(z, t) == y]."""
        table = np.zeros((self.n_latents, len(self.vocabulary)))
        z = np.arange(self.n_latents)
        for t, tpl in enumerate(self.templates):
            np.add.at(table, (z, self.caption_table[t]), tpl.prob)
        return table

    @cached_property
    def p_y_aligned(self) -> np.ndarray:
        """(Y,) p_aligned(y) = sum_z p(z) p(y|z): the caption marginal of aligned pairs."""
        return self.p_z @ self.p_y_given_z  # (Z,) @ (Z, Y) -> (Y,)

    @property
    def noise_template_probs(self) -> np.ndarray:
        """(T,) template weights of noise captions: w^b_t = (1-g) w_t + g [t == generic_template]."""
        w = (1.0 - self.noise_generic_weight) * np.array([t.prob for t in self.templates], dtype=np.float64)
        if self.noise_generic_weight > 0:
            w[self.generic_template] += self.noise_generic_weight
        return w

    @cached_property
    def p_y_noise(self) -> np.ndarray:
        """(Y,) b(y) = g [y == "an image"] + (1-g) p_aligned(y): captions of misaligned pairs and placeholders."""
        b = (1.0 - self.noise_generic_weight) * self.p_y_aligned
        if self.noise_generic_weight > 0:
            b[self._vocabulary_index[GENERIC_CAPTION]] += self.noise_generic_weight
        return b

    @cached_property
    def p_y(self) -> np.ndarray:
        """(Y,) p(y) = (1-m-q) p_aligned(y) + (m+q) b(y), the caption marginal of the whole pool."""
        m, q = self.misaligned_rate, self.placeholder_rate
        return (1.0 - m - q) * self.p_y_aligned + (m + q) * self.p_y_noise

    @cached_property
    def p_c(self) -> np.ndarray:
        """(Z+1,) image-class prior: (1-q) p(z) for the latents, then q for the placeholder."""
        return np.append((1.0 - self.placeholder_rate) * self.p_z, self.placeholder_rate)

    @cached_property
    def p_y_given_c(self) -> np.ndarray:
        """(Z+1, Y) p(y|x) per image class: [(1-m-q) p(y|z) + m b(y)]/(1-q) for latents; b(y) for the placeholder."""
        m, q = self.misaligned_rate, self.placeholder_rate
        latents = ((1.0 - m - q) * self.p_y_given_z + m * self.p_y_noise) / (1.0 - q)  # (Z, Y)
        return np.vstack([latents, self.p_y_noise])

    @cached_property
    def log_ratio_table(self) -> np.ndarray:
        """(Z+1, Y) log r(c, y) = log p(y|c) - log p(y)  (p(y) > 0 for every caption of the vocabulary).

        -inf where p(y|c) = 0 (e.g. m = 0 and latent c never emits y, or the placeholder when b(y) = 0, i.e. m = q = 0
        or g = 1): such a pair cannot occur."""
        with np.errstate(divide="ignore"):
            return np.log(self.p_y_given_c / self.p_y)  # (Z+1, Y) / (Y,) -> (Z+1, Y)

    @cached_property
    def kl_image_table(self) -> np.ndarray:
        """(Z+1,) KL(p(y|x) || p(y)) = sum_y p(y|c) log r(c, y)  (0 * log 0 = 0)."""
        return _xlogr_sum(self.p_y_given_c, self.log_ratio_table, axis=1)

    @cached_property
    def klr_image_table(self) -> np.ndarray:
        """(Z+1,) KL(p(y) || p(y|x)) = sum_y p(y) (-log r(c, y))."""
        return -(self.log_ratio_table @ self.p_y)  # (Z+1, Y) @ (Y,) -> (Z+1,)

    @cached_property
    def kl_text_table(self) -> np.ndarray:
        """(Y,) KL(p(x|y) || p(x)) = sum_c p(c) r(c, y) log r(c, y)."""
        weight = self.p_c[:, None] * np.exp(self.log_ratio_table)  # (Z+1, Y): p(c) r(c, y) = p(c|y)
        return _xlogr_sum(weight, self.log_ratio_table, axis=0)

    @cached_property
    def klr_text_table(self) -> np.ndarray:
        """(Y,) KL(p(x) || p(x|y)) = sum_c p(c) (-log r(c, y))."""
        return -(self.p_c @ self.log_ratio_table)  # (Z+1,) @ (Z+1, Y) -> (Y,)

    def _class_row(self, latent: np.ndarray | int) -> np.ndarray:
        latent = np.asarray(latent, dtype=np.int64)
        bad = (latent < PLACEHOLDER) | (latent >= self.n_latents)
        if np.any(bad):
            raise ValueError(f"latent indices must lie in [-1, {self.n_latents}), got {latent[bad][:5].tolist()}")
        return np.where(latent < 0, self.n_latents, latent)

    def true_log_ratio(self, latent: np.ndarray | int, caption: np.ndarray | int) -> np.ndarray:
        """log p(y|x)/p(y) = log p(x|y)/p(x) for images of latent ``latent`` (-1: placeholder) and caption indices."""
        return self.log_ratio_table[self._class_row(latent), np.asarray(caption, dtype=np.int64)]

    def kl_image(self, latent: np.ndarray | int) -> np.ndarray:
        """KL(p(y|x) || p(y)) of each image."""
        return self.kl_image_table[self._class_row(latent)]

    def klr_image(self, latent: np.ndarray | int) -> np.ndarray:
        """KL(p(y) || p(y|x)) of each image."""
        return self.klr_image_table[self._class_row(latent)]

    def kl_text(self, caption: np.ndarray | int) -> np.ndarray:
        """KL(p(x|y) || p(x)) of each caption index."""
        return self.kl_text_table[np.asarray(caption, dtype=np.int64)]

    def klr_text(self, caption: np.ndarray | int) -> np.ndarray:
        """KL(p(x) || p(x|y)) of each caption index."""
        return self.klr_text_table[np.asarray(caption, dtype=np.int64)]

    # ---------------------------------------------------------------- sampling and rendering

    def sample_pairs(self, n: int, rng: np.random.Generator) -> PairSample:
        """Draw ``n`` pair labels from the generative model (no rendering).

        A noise caption y ~ b(y) is drawn as z' ~ p(z), t ~ w^b, y = caption(z', t) (exact, see the module
        docstring), which records the caption's template for misaligned and placeholder pairs too. The template is
        drawn by inversion of one uniform per pair, against the cdf of w (aligned) or w^b (noise); with g = 0 the
        two coincide and the draws are those of the older world, number for number."""
        m, q = self.misaligned_rate, self.placeholder_rate
        kind = rng.choice(3, size=n, p=[1.0 - m - q, m, q])  # 0 aligned, 1 misaligned, 2 placeholder
        z_image = rng.choice(self.n_latents, size=n, p=self.p_z)
        z_caption = rng.choice(self.n_latents, size=n, p=self.p_z)
        u = rng.random(n)
        template = np.where(
            kind == 0,
            _inverse_cdf(np.array([t.prob for t in self.templates], dtype=np.float64), u),
            _inverse_cdf(self.noise_template_probs, u),
        )
        caption = self.caption_table[template, np.where(kind == 0, z_image, z_caption)]
        return PairSample(
            latent=np.where(kind == 2, PLACEHOLDER, z_image).astype(np.int64),
            template=template.astype(np.int64),
            caption=caption,
            is_misaligned=kind == 1,
            is_placeholder=kind == 2,
        )

    def render(self, latent: int, rng: np.random.Generator) -> np.ndarray:
        """(H, W, 3) uint8 pixels of an image of latent ``latent`` (-1: a placeholder)."""
        if latent < 0:
            return _render.render_placeholder(rng, self.image_size)
        names = self.latent_names(latent)
        return _render.render_shape(names["shape"], names["colour"], names["size"], rng, self.image_size)

    def sample_labelled(self, n: int, rng: np.random.Generator, domain: str | None = None) -> LabelledImages:
        """``n`` rendered images with z ~ p(z | domain) (p(z) when ``domain`` is None); never placeholders.

        For zero-shot evaluation sets, e.g. ``sample_labelled(500, rng, domain="red")``. Pixels are raw (not
        JPEG round-tripped)."""
        weights = self.p_z if domain is None else np.where(self.domain_mask(domain), self.p_z, 0.0)
        latent = rng.choice(self.n_latents, size=n, p=weights / weights.sum()).astype(np.int64)
        images = np.empty((n, self.image_size, self.image_size, 3), dtype=np.uint8)
        for i, z in enumerate(latent):
            images[i] = self.render(int(z), rng)
        return LabelledImages(images=images, latent=latent, label=self.class_label(latent))


def _inverse_cdf(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Category index of each uniform ``u`` under probabilities ``p`` (what ``Generator.choice(len(p), p=p)`` does
    with its own uniforms, so equal uniforms give equal draws; zero-probability categories are never drawn)."""
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return cdf.searchsorted(u, side="right").astype(np.int64)


def _xlogr_sum(weight: np.ndarray, log_r: np.ndarray, axis: int) -> np.ndarray:
    """sum over ``axis`` of weight * log_r, with terms of zero weight counted as 0 (even where log_r = -inf)."""
    return np.where(weight > 0, weight * np.where(weight > 0, log_r, 0.0), 0.0).sum(axis=axis)
