"""Scope: is this image what the model was trained on (a frontal chest X-ray of a young child)?

Every scored row is marked ``in`` or ``out`` of scope. An out-of-scope image is still scored, but
its row never passes as "not flagged": its prediction is ``OUT-OF-SCOPE``, it counts as flagged
(a person reads it), and its reason starts with :data:`OUT_PREFIX`.

Each rule is a small function of :class:`Evidence` returning a reason (plain words) when the
image is out of scope, else None; :data:`RULES` is the table of them, applied in order (every
rule that fires is named in the reason). Two kinds:

- DICOM header facts (``Decoded.tags``, read by :mod:`runtime.imaging.dicom`): a body part other than the
  chest, a lateral view, a patient age outside the bundle's training population
  (``manifest.model.population``; bundles without it: children aged 1-5, both reference models).
  A DICOM whose modality is not a radiograph stays an error row (:mod:`runtime.imaging.dicom`).
- the population check (:mod:`runtime.judging.population`, bundles that ship one): from the
  image alone, is this X-ray from the model's population (e.g. an adult's, for a model of young
  children)? Not asked when the DICOM header gives the patient's age: the age rule decides then.
  Its graph is run on a whole batch: :func:`assess_rules` (in the decode worker) keeps the
  rules' reasons and the check's thumbnail in a :class:`Pending`, :func:`conclude` scores the
  thumbnails of a batch together and gives every image its :class:`Scope`; :func:`assess` is
  both for one image.
- image statistics, measured on a 128 x 128 area-resized copy of the whole decoded image (and
  the colour chroma the decoder measured before its gray conversion). The thresholds were set on
  training images only: the 5,216 Kermany training JPEGs and the 350 cxr_samples (5,566 X-rays),
  and the same X-rays inverted; the test split was only measured afterwards (docs/scope-and-calibration.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from runtime.contract.manifest import CHILDREN_1_TO_5, Population
from runtime.imaging.dicom import CHEST_PARTS
from runtime.imaging.pixels import Decoded
from runtime.judging.population import PopulationCheck, thumbnail

#: the prediction written for an out-of-scope row, and the start of its reason
OUT_OF_SCOPE = "OUT-OF-SCOPE"
OUT_PREFIX = "read without the model: outside what it was trained on"
IN_REASON = "frontal chest X-ray within the trained population (every scope rule passed)"

#: side of the square thumbnail the image statistics are measured on
THUMB = 128
#: corner squares (pixels of the thumbnail), dark around a chest X-ray
CORNER = 16

# Thresholds, from the 5,566 training X-rays (quantiles over them in brackets):
#: chroma (mean max-min of R, G, B, 8-bit units) above this is a colour picture
#: (training X-rays: 0.0, all 5,566 store gray in their colour channels)
MAX_CHROMA = 8.0
#: gray-level standard deviation below this is a blank image (training: min 19.6, 0.1% 25.5)
MIN_CONTRAST = 10.0
#: correlation of horizontally adjacent thumbnail pixels below this is noise, not anatomy
#: (training: min 0.90, 0.1% 0.94)
MIN_NEIGHBOUR_CORRELATION = 0.80
#: polarity (see image_stats) below this: inverted gray scale. Training X-rays: min +0.63,
#: median +1.99; inverting an image negates its polarity, so the same X-rays inverted: max -0.63
MIN_POLARITY = 0.0
#: share of pure white (>= 250) pixels above this: a document or screenshot (training: max 0.078)
MAX_WHITE_SHARE = 0.20
#: DICOM ViewPosition values of a lateral view
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"})


@dataclass(frozen=True)
class ImageStats:
    """The measured statistics of one image (see the thresholds above)."""

    contrast: float
    neighbour_correlation: float
    polarity: float  # (spine band - lung bands) - (corners - mean), in standard deviations
    white_share: float


def image_stats(pixels: np.ndarray, thumb: np.ndarray | None = None) -> ImageStats:
    """Statistics of a 2-D uint8 image, on its THUMB x THUMB area-resized copy (``thumb``: that
    copy, when the caller already made it: a model whose input is the whole image area-resized
    to THUMB px).

    Polarity: a frontal chest X-ray has a bright vertical band in the middle (spine and
    mediastinum) between darker lungs, and dark corners; both terms change sign when the gray
    scale is inverted.
    """
    import cv2

    if thumb is None:
        thumb = cv2.resize(pixels, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    elif thumb.shape != (THUMB, THUMB):
        raise ValueError(f"a scope thumbnail is {THUMB}x{THUMB}, got {thumb.shape}")
    thumb = thumb.astype(np.float64)
    contrast = float(thumb.std())
    left, right = thumb[:, :-1].ravel(), thumb[:, 1:].ravel()
    spread = left.std() * right.std()
    correlation = float(((left - left.mean()) * (right - right.mean())).mean() / spread) \
        if spread > 0 else 1.0
    scale = contrast or 1.0
    columns = thumb[THUMB // 8:-THUMB // 8].mean(axis=0)  # leave the top and bottom eighths out
    n = THUMB // 128  # the bands below are given for a 128-pixel thumbnail
    spine = columns[56 * n:72 * n].mean()
    lungs = np.concatenate([columns[20 * n:40 * n], columns[88 * n:108 * n]]).mean()
    c = CORNER
    corners = np.concatenate([thumb[:c, :c], thumb[:c, -c:], thumb[-c:, :c], thumb[-c:, -c:]])
    polarity = (spine - lungs) / scale - (corners.mean() - thumb.mean()) / scale
    return ImageStats(contrast, correlation, float(polarity), float((thumb >= 250).mean()))


@dataclass(frozen=True)
class Evidence:
    """What the rules look at for one image."""

    stats: ImageStats
    chroma: float = 0.0
    tags: dict[str, str] = field(default_factory=dict)
    population: Population = field(default_factory=lambda: CHILDREN_1_TO_5)


Rule = Callable[[Evidence], "str | None"]


def body_part_not_chest(e: Evidence) -> str | None:
    part = e.tags.get("BodyPartExamined", "").strip().upper()
    return f"DICOM body part examined is {part}, not the chest" \
        if part and part not in CHEST_PARTS else None


def lateral_view(e: Evidence) -> str | None:
    view = e.tags.get("ViewPosition", "").strip().upper()
    return f"DICOM view position {view} is a lateral view; the model was trained on frontal " \
           "views" if view in LATERAL_VIEWS else None


def parse_age(age: str) -> tuple[int, str] | None:
    """A DICOM age string (nnnD/W/M/Y; a bare number read as years) -> (number, unit)."""
    match = re.fullmatch(r"\s*(\d{1,3})\s*([DWMY]?)\s*", age.upper())
    return (int(match.group(1)), match.group(2) or "Y") if match else None


def age_outside_population(e: Evidence) -> str | None:
    age = parse_age(e.tags.get("PatientAge", ""))
    if age is None:
        return None
    number, unit = age
    years = number / {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}[unit]
    p = e.population
    if p.min_age_years <= years < p.max_age_years + 1:  # "5Y" holds up to the 6th birthday
        return None
    return f"patient age {number}{unit}: the model was trained on {p.description}"


def colour_picture(e: Evidence) -> str | None:
    return f"a colour picture (chroma {e.chroma:.1f} > {MAX_CHROMA:g}), not an X-ray" \
        if e.chroma > MAX_CHROMA else None


def blank_image(e: Evidence) -> str | None:
    return f"a blank image (gray-level spread {e.stats.contrast:.1f} < {MIN_CONTRAST:g})" \
        if e.stats.contrast < MIN_CONTRAST else None


def noise_image(e: Evidence) -> str | None:
    c = e.stats.neighbour_correlation
    return f"noise, not anatomy (neighbouring pixels correlate {c:.2f} < " \
           f"{MIN_NEIGHBOUR_CORRELATION:g})" if c < MIN_NEIGHBOUR_CORRELATION else None


def inverted_gray_scale(e: Evidence) -> str | None:
    return f"inverted gray scale (polarity {e.stats.polarity:.2f} < {MIN_POLARITY:g}: dark spine " \
           "or bright corners, where a chest X-ray has a bright spine and dark surroundings)" \
        if e.stats.polarity < MIN_POLARITY else None


def document_or_screenshot(e: Evidence) -> str | None:
    w = e.stats.white_share
    return f"a document or screenshot ({100 * w:.0f}% pure white)" if w > MAX_WHITE_SHARE else None


#: the rules, in the order their reasons are written
RULES: tuple[tuple[str, Rule], ...] = (
    ("body part", body_part_not_chest), ("lateral view", lateral_view),
    ("patient age", age_outside_population), ("colour", colour_picture),
    ("blank", blank_image), ("noise", noise_image), ("inverted", inverted_gray_scale),
    ("document", document_or_screenshot),
)


@dataclass(frozen=True)
class Scope:
    """The verdict written to a row's ``scope`` and ``scope_reason`` columns."""

    inside: bool
    reason: str

    @property
    def label(self) -> str:
        return "in" if self.inside else "out"


def rule_reasons(evidence: Evidence) -> tuple[str, ...]:
    """The reason of every rule that fires, in the order of :data:`RULES`."""
    return tuple(reason for _, rule in RULES if (reason := rule(evidence)))


def scope_of(reasons: Sequence[str]) -> Scope:
    """The verdict of an image given every reason it is out of scope (none: in scope)."""
    if not reasons:
        return Scope(True, IN_REASON)
    return Scope(False, f"{OUT_PREFIX}: " + "; ".join(reasons))


def judge(evidence: Evidence, also: tuple[str, ...] = ()) -> Scope:
    """Apply every rule; out of scope when any fires or ``also`` gives reasons (all their
    reasons are given)."""
    return scope_of(rule_reasons(evidence) + tuple(also))


@dataclass(frozen=True)
class Pending:
    """An image's scope before the population check has answered: the rules' reasons, and the
    check's thumbnail when the check is to be asked (None: no check, or the DICOM header gives
    the patient's age, whose rule decides then)."""

    reasons: tuple[str, ...]
    check_thumbnail: np.ndarray | None = None


def assess_rules(decoded: Decoded, population: Population = CHILDREN_1_TO_5,
                 check: PopulationCheck | None = None, thumb: np.ndarray | None = None
                 ) -> Pending:
    """The rules' part of :func:`assess` (cheap, per image, e.g. in a decode worker), and the
    population ``check``'s thumbnail when it is to be asked; :func:`conclude` finishes it."""
    reasons = rule_reasons(Evidence(image_stats(decoded.pixels, thumb), decoded.chroma,
                                    decoded.tags, population))
    asked = check is not None and parse_age(decoded.tags.get("PatientAge", "")) is None
    return Pending(reasons, thumbnail(decoded.pixels) if asked else None)


def conclude(pending: Sequence[Pending], check: PopulationCheck | None) -> list[Scope]:
    """The verdict of every image of a batch: the population ``check`` scores the thumbnails of
    the batch together (not one call per image), and its reason (if any) follows the rules'."""
    asked = [i for i, p in enumerate(pending) if p.check_thumbnail is not None]
    also: dict[int, str | None] = {}
    if asked:
        if check is None:
            raise ValueError("a population check thumbnail was made but no check was given")
        also = dict(zip(asked, check.verdicts(np.stack([pending[i].check_thumbnail
                                                       for i in asked]))))
    return [scope_of(p.reasons + ((extra,) if (extra := also.get(i)) else ()))
            for i, p in enumerate(pending)]


def assess(decoded: Decoded, population: Population = CHILDREN_1_TO_5,
           check: PopulationCheck | None = None, thumb: np.ndarray | None = None) -> Scope:
    """The scope of a decoded image (its pixels, colour and DICOM header), with the bundle's
    population ``check`` when it has one and the header gives no patient age; ``thumb``: its
    THUMB x THUMB area-resized copy when already made (see :func:`image_stats`)."""
    return conclude([assess_rules(decoded, population, check, thumb)], check)[0]
