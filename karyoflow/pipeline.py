"""The whole karyotyping pipeline for one metaphase image (MCI), in process.

segment (ChrRender) -> cut each instance out of the MCI with its mask (background removed) ->
rotate & crop -> classify (ChrNet4, the cell's ICIs together) -> karyotype-level assignment ->
karyogram and report. `Karyotyper` loads the models once and is reused for every image: the
CLI, the workers and a notebook all call `Karyotyper.analyse`.

Stains: every stage works on the bright-on-dark representation (karyoflow.stain); a G-band MCI
is inverted on the way in and its karyogram drawn dark on light. The classifier is the one
trained on the image's stain (models/chrnet4.pt for Q-band, models/chrnet4-gband.pt for
G-band), loaded when first needed. The segmenter is the stain's own where one is given
(`segmenter_weights_by_stain`) or shipped (models/chrrender-gband.pt for G-band), else the
Q-band ChrRender on the inverted image; the report's `models` says which was used and what it
was trained on.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from karyoflow.classify.predictor import ChromosomeClassifier, IciPrediction, prediction_from_probabilities
from karyoflow.classify.preprocess import canvas_for, cell_normalisation
from karyoflow.classify.weights import weights_stain
from karyoflow.clusters import DEFAULT_PAIR_SPLIT_MARGIN, DEFAULT_SPLIT_MARGIN, Split, contact_point, resolve_splits
from karyoflow.karyotype import (
    DEFAULT_GAIN_PENALTY,
    DEFAULT_LOSS_PENALTY,
    Karyotype,
    assign_karyotype,
    call_margin,
    karyotype_from_labels,
)
from karyoflow.labels import LABELS
from karyoflow.pairsplit.predictor import PairSplitter
from karyoflow.resources import default_classifier_weights, default_pair_split_weights, default_segmenter_weights
from karyoflow.segment.engines import DEFAULT_ENGINE, check_engine, load_segmenter
from karyoflow.segment.evaluate import Detections
from karyoflow.segment.postprocess import DEFAULT_MAX_CONTAINMENT, DEFAULT_SCORE_THRESHOLD, select_chromosomes
from karyoflow.segment.predictor import segment_images
from karyoflow.stain import STAIN_NAMES, Stain, StainChoice, check_stain, resolve_stain, to_bright_on_dark
from karyoflow.straighten import FOREGROUND_LEVEL, straighten
from karyoflow.weights_io import sha256_of

LOW_CONFIDENCE = 0.5  # a chromosome whose assigned class has p < this is marked in the karyogram
ICI_PAD = 2  # pixels of margin kept around a mask when cutting the ICI out
# Detections from this score up are candidates for the karyotype assignment, which keeps a weak
# one only where the karyotype has room for it (karyoflow.karyotype); see docs/pipeline.md.
DEFAULT_CANDIDATE_THRESHOLD = 0.3
NORMAL_COUNT = 46
# a chromosome under these shares of the cell's median area, or of its largest homologue's, may
# be a fragment (a 21 is about a third of the median chromosome, and homologues differ by ~20%)
FRAGMENT_AREA = 0.25
HOMOLOGUE_FRAGMENT = 0.55


@dataclass
class Chromosome:
    id: int
    label: str  # assigned class ("1".."22", "X", "Y")
    class_index: int  # 1..24
    score: float  # probability of the assigned class
    top3: list[tuple[str, float]]
    argmax_label: str  # the classifier's own first choice, before the karyotype assignment
    detection_score: float
    bbox: tuple[int, int, int, int] | None  # x0, y0, x1, y1 (exclusive) in MCI pixels; None without an MCI
    mask: np.ndarray | None  # H x W bool, in MCI pixels (None for a cell given as its ICIs)
    angle: float  # degrees the ICI was rotated by when straightened
    straightened: np.ndarray  # vertical, margins cut, native scale (uint8, bright on dark)
    candidate: int = 0  # index among the cell's segmented candidates (SegmentedCell)
    source: str = ""  # the ICI's file name, for a cell given as its ICIs

    @property
    def low_confidence(self) -> bool:
        return self.score < LOW_CONFIDENCE or self.label != self.argmax_label


@dataclass
class SegmentedCell:
    """What segmentation and rotate & crop give for one MCI: the input of classification."""

    width: int
    height: int
    detection_scores: np.ndarray  # N
    masks: np.ndarray  # N x H x W bool
    boxes: list[tuple[int, int, int, int]]
    straightened: list[np.ndarray]  # N vertical ICIs, margins cut, native scale
    angles: np.ndarray  # N degrees
    scale: float  # the cell's normalisation for the classifier
    level: float
    stain: Stain = "q"


@dataclass
class ReviewItem:
    """Something a reviewer should look at before accepting the call."""

    # "chromosome_count", "split_pair", "possible_merged_pair", "possible_fragment", "low_confidence"
    kind: str
    message: str
    x: int | None = None  # where in the MCI (pixels), when the item is one place
    y: int | None = None
    chromosome_id: int | None = None


@dataclass
class KaryotypeResult:
    image_name: str
    width: int
    height: int
    chromosomes: list[Chromosome]
    karyotype: Karyotype
    timings_ms: dict[str, float]
    models: dict[str, dict] = field(default_factory=dict)
    stain: Stain = "q"
    source: str = "mci"  # "mci": a metaphase image; "icis": a cell given as its cut-out chromosomes
    # the call against its best rival (karyoflow.karyotype.call_margin); inf without a rival
    margin_nats: float = math.inf
    rival: str | None = None
    review: list[ReviewItem] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        """Probability of the call against its best rival under the assignment's costs. It
        measures doubt between classes, not about the count: a merged pair or a lost
        chromosome is raised in `review` instead."""
        return 1.0 / (1.0 + math.exp(-min(self.margin_nats, 50.0)))


def _centre(box: tuple[int, int, int, int]) -> tuple[int, int]:
    return (box[0] + box[2]) // 2, (box[1] + box[3]) // 2


def review_items(chromosomes: list[Chromosome], karyotype: Karyotype) -> list[ReviewItem]:
    """Review items that follow from the assigned chromosomes alone (see `ReviewItem`). Without
    masks (a cell given as its ICIs) sizes are the straightened ICIs' foreground areas and no
    place is given."""
    items: list[ReviewItem] = []
    count = len(chromosomes)
    if count != NORMAL_COUNT:
        items.append(
            ReviewItem(
                "chromosome_count",
                f"{count} chromosomes found: confirm the "
                + (
                    "loss (a merged pair or an overlapped chromosome reads as one)"
                    if count < NORMAL_COUNT
                    else "gain (a fragment or a debris particle reads as a chromosome)"
                ),
            )
        )

    def where(c: Chromosome) -> tuple[str, int | None, int | None]:
        if c.bbox is None:
            return (f" ({c.source})" if c.source else ""), None, None
        x, y = _centre(c.bbox)
        return f" near {x},{y}", x, y

    if chromosomes:
        areas = {
            c.id: int(c.mask.sum()) if c.mask is not None else int((c.straightened > FOREGROUND_LEVEL).sum())
            for c in chromosomes
        }
        median_area = float(np.median(list(areas.values())))
        largest_of_class: dict[str, int] = {}
        for c in chromosomes:
            largest_of_class[c.label] = max(largest_of_class.get(c.label, 0), areas[c.id])
        for c in chromosomes:
            # far smaller than its homologue, or than any chromosome should be
            if (
                areas[c.id] < HOMOLOGUE_FRAGMENT * largest_of_class[c.label]
                or areas[c.id] < FRAGMENT_AREA * median_area
            ):
                place, x, y = where(c)
                items.append(
                    ReviewItem("possible_fragment", f"possible fragment{place} (read as {c.label})", x, y, c.id)
                )
    gained = {a["chromosome"] for a in karyotype.abnormalities if a["type"] == "gain"}
    for c in chromosomes:
        if c.low_confidence or (c.label in gained and c.score < 0.9):
            place, x, y = where(c)
            message = f"low-confidence {c.label}{place} (p {c.score:.2f})"
            items.append(ReviewItem("low_confidence", message, x, y, c.id))
    return items


def cut_out(image: np.ndarray, mask: np.ndarray, pad: int = ICI_PAD) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The ICI of one instance: the MCI's pixels inside the mask, zero elsewhere, cropped to the
    mask's box plus `pad`; and the box (x0, y0, x1, y1), exclusive, in MCI pixels."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("empty mask")
    y0, y1 = max(int(ys.min()) - pad, 0), min(int(ys.max()) + pad + 1, image.shape[0])
    x0, x1 = max(int(xs.min()) - pad, 0), min(int(xs.max()) + pad + 1, image.shape[1])
    crop = np.where(mask[y0:y1, x0:x1], image[y0:y1, x0:x1], 0).astype(np.uint8)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return crop, box


def grey_from_bytes(data: bytes) -> np.ndarray:
    """An encoded image (PNG, JPEG, TIFF, BMP) as a grey uint8 array."""
    with Image.open(io.BytesIO(data)) as image:
        return to_grey(image)


def to_grey(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("L"), dtype=np.uint8)
    array = np.asarray(image)
    if array.ndim == 3:
        return np.asarray(Image.fromarray(array.astype(np.uint8)).convert("L"), dtype=np.uint8)
    if array.ndim != 2:
        raise ValueError(f"an MCI must be a grey or colour image, got shape {array.shape}")
    return array.astype(np.uint8)


def model_info(path: Path, meta: dict, stain: str) -> dict:
    """What a report says of a model: file, sha256 (hashed here: call once per loaded model),
    architecture, backbone and the stain it was trained on."""
    return {
        "file": path.name,
        "sha256": sha256_of(path),
        "architecture": meta.get("architecture", ""),
        "backbone": meta.get("backbone", ""),
        "stain": stain,  # what it was trained on
    }


class MissingModelError(FileNotFoundError):
    """No model is installed for what was asked (e.g. G-band classification without its weights)."""


def split_items(splits: list[Split], made: bool = True) -> list[ReviewItem]:
    """Review items for detections cluster resolution split (`made`) or would split."""
    items = []
    for split in splits:
        x, y = contact_point(*split.masks)
        pair = "+".join(LABELS[int(np.argmax(p))] for p in split.probabilities)
        if made:
            items.append(ReviewItem("split_pair", f"detection split in two near {x},{y} ({pair}): check the cut", x, y))
        else:
            items.append(ReviewItem("possible_merged_pair", f"possible merged pair near {x},{y} ({pair}?)", x, y))
    return items


class Karyotyper:
    """Both models loaded once; `analyse` runs one MCI end to end."""

    def __init__(
        self,
        segmenter_weights: Path | None = None,
        classifier_weights: Path | None = None,
        device: str | None = None,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        max_containment: float = DEFAULT_MAX_CONTAINMENT,
        assignment: bool = True,
        candidate_threshold: float = DEFAULT_CANDIDATE_THRESHOLD,
        gain_penalty: float = DEFAULT_GAIN_PENALTY,
        loss_penalty: float = DEFAULT_LOSS_PENALTY,
        segment_tta: bool = False,
        stain: StainChoice = "auto",
        classifier_weights_by_stain: dict[str, Path] | None = None,
        segmenter_weights_by_stain: dict[str, Path] | None = None,
        resolve_clusters: bool = False,
        split_margin: float = DEFAULT_SPLIT_MARGIN,
        segment_engine: str = DEFAULT_ENGINE,
        pair_split_weights: Path | None = None,
        pair_split: bool = True,
        pair_split_margin: float = DEFAULT_PAIR_SPLIT_MARGIN,
    ) -> None:
        """`classifier_weights` is the Q-band classifier (default models/chrnet4.pt);
        `classifier_weights_by_stain` overrides any stain's (default: the committed ones).
        `stain` is what `analyse` assumes when not told: q, g or auto (detected per image).
        `resolve_clusters`: split detections that hold two touching chromosomes where the
        assignment improves by more than `split_margin` nats (karyoflow.clusters); with
        `pair_split`, PairSplit (`pair_split_weights`, default models/pairsplit.pt where
        installed) proposes a split of each detection too, kept where the assignment improves by
        more than `pair_split_margin` nats.
        `segment_engine`: torchvision (default) or detectron2 (karyoflow.segment.engines); the
        segmenter weights, default and per stain, are that engine's."""
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            torch.set_flush_denormal(True)
        self.device = torch.device(device)
        self.stain: StainChoice = check_stain(stain)
        self.segment_engine = check_engine(segment_engine)
        segmenter_path = Path(segmenter_weights or default_segmenter_weights(segment_engine))
        self.classifier_paths: dict[str, Path] = {
            "q": Path(classifier_weights or default_classifier_weights("q")),
            "g": default_classifier_weights("g"),
            **{k: Path(v) for k, v in (classifier_weights_by_stain or {}).items()},
        }
        gband_segmenter = default_segmenter_weights(segment_engine, "g")  # else the Q-band one, inverted
        self.segmenter_paths: dict[str, Path] = {
            **({"g": gband_segmenter} if gband_segmenter.is_file() else {}),
            **{k: Path(v) for k, v in (segmenter_weights_by_stain or {}).items()},
        }
        self.segmenter, segmenter_meta = load_segmenter(segmenter_path, self.device, segment_engine)
        self._segmenters: dict[str, tuple[object, dict]] = {}
        self._segmenter_info = model_info(segmenter_path, segmenter_meta, str(segmenter_meta.get("stain", "q")))
        self._classifiers: dict[str, ChromosomeClassifier] = {}
        self._classifier_info: dict[str, dict] = {}  # file, sha256, ...: hashed once, at load
        self.score_threshold = score_threshold
        self.segment_tta = segment_tta  # a second, mirrored segmentation pass (opt-in)
        self.max_containment = max_containment
        self.assignment = assignment
        # with the assignment, weaker detections are candidates it may keep or reject
        self.candidate_threshold = min(candidate_threshold, score_threshold) if assignment else score_threshold
        self.gain_penalty, self.loss_penalty = gain_penalty, loss_penalty
        self.resolve_clusters = resolve_clusters and assignment
        self.split_margin = split_margin
        pair_split_path = Path(pair_split_weights or default_pair_split_weights())
        if pair_split_weights is not None and not pair_split_path.is_file():
            raise MissingModelError(f"no PairSplit weights at {pair_split_path}")
        wanted = self.resolve_clusters and pair_split and pair_split_path.is_file()
        self.pair_split_path = pair_split_path if wanted else None
        self._pair_splitter: PairSplitter | None = None
        self.pair_split_margin = pair_split_margin
        self.settings = {
            "score_threshold": score_threshold,
            "max_containment": max_containment,
            "segment_tta": segment_tta,
            "candidate_threshold": self.candidate_threshold,
            "assignment": "capacity" if assignment else "argmax",
            "resolve_clusters": self.resolve_clusters,
            "pair_split": self.pair_split_path is not None,
            **({"pair_split_margin": pair_split_margin} if self.pair_split_path is not None else {}),
        }
        self.models = self.models_for("q")

    # -- models per stain --

    @property
    def classifier(self) -> ChromosomeClassifier:
        """The Q-band classifier (what a Karyotyper without stains used)."""
        return self.classifier_for("q")

    def classifier_for(self, stain: Stain) -> ChromosomeClassifier:
        if stain not in self._classifiers:
            path = self.classifier_paths[stain]
            if not path.is_file():
                raise MissingModelError(f"no {STAIN_NAMES[stain]} classifier at {path}")
            classifier = ChromosomeClassifier(path, device=str(self.device))
            trained_on = weights_stain(classifier.meta)
            if trained_on != stain:
                raise MissingModelError(f"{path} was trained on {STAIN_NAMES.get(trained_on, trained_on)} ICIs")
            self._classifiers[stain] = classifier
            self._classifier_info[stain] = model_info(path, classifier.meta, trained_on)
        return self._classifiers[stain]

    def segmenter_for(self, stain: Stain) -> tuple[object, dict]:
        """The stain's own segmenter if one was given, else the default one (on the working
        representation, which is the same for both stains) and its model info."""
        path = self.segmenter_paths.get(stain)
        if path is None:
            return self.segmenter, self._segmenter_info
        if stain not in self._segmenters:
            segmenter, meta = load_segmenter(path, self.device, self.segment_engine)
            self._segmenters[stain] = (segmenter, model_info(path, meta, str(meta.get("stain", stain))))
        return self._segmenters[stain]

    def models_for(self, stain: Stain) -> dict:
        self.classifier_for(stain)  # loaded (and its info made) on first use
        models = {"segmenter": self.segmenter_for(stain)[1], "classifier": self._classifier_info[stain]}
        if self.pair_split_path is not None:
            models["pair_splitter"] = self.pair_splitter().info
        return {**models, **self.settings}

    def pair_splitter(self) -> PairSplitter:
        """PairSplit, loaded on first use (only cluster resolution uses it)."""
        if self._pair_splitter is None:
            assert self.pair_split_path is not None
            self._pair_splitter = PairSplitter(self.pair_split_path, self.device)
        return self._pair_splitter

    def working_image(
        self, image: np.ndarray | Image.Image, stain: StainChoice | None = None
    ) -> tuple[np.ndarray, Stain]:
        """A grey MCI in the working representation (bright on dark) and its stain: the one
        given, else this Karyotyper's, with 'auto' detected from the image's background."""
        grey = to_grey(image)
        resolved = resolve_stain(stain or self.stain, [grey])
        return to_bright_on_dark(grey, resolved), resolved

    # -- the four stages --

    def detect(self, image: np.ndarray, stain: Stain = "q") -> Detections:
        """Stage 1: the chromosome candidates of a grey MCI in the working representation."""
        segmenter = self.segmenter_for(stain)[0]
        detections = segment_images(segmenter, [image], self.device, flip_tta=self.segment_tta)[0]
        return select_chromosomes(detections, self.candidate_threshold, self.max_containment)

    def cut_and_straighten(self, image: np.ndarray, detections: Detections, stain: Stain = "q") -> SegmentedCell:
        """Stage 2: every candidate cut out with its mask, rotated & cropped; the cell's
        normalisation for the stain's classifier."""
        preprocessing = self.classifier_for(stain).preprocessing
        cuts = [cut_out(image, mask) for mask in detections.masks]
        straightened = [straighten(ici, preprocessing.method) for ici, _ in cuts]
        images = [s.image for s in straightened]
        scale, level = cell_normalisation(images, preprocessing.reference_size) if images else (1.0, 255.0)
        return SegmentedCell(
            width=image.shape[1],
            height=image.shape[0],
            detection_scores=np.asarray(detections.scores, dtype=np.float64),
            masks=detections.masks,
            boxes=[box for _, box in cuts],
            straightened=images,
            angles=np.array([s.angle for s in straightened], dtype=np.float32),
            scale=scale,
            level=level,
            stain=stain,
        )

    def canvas(self, straightened: np.ndarray, scale: float, level: float, stain: Stain = "q") -> np.ndarray:
        preprocessing = self.classifier_for(stain).preprocessing
        return canvas_for(straightened, scale, level, preprocessing.height, preprocessing.width)

    def classify(self, cell: SegmentedCell) -> list[IciPrediction]:
        """Stage 3: the stain's ChrNet4 on every ICI of the cell."""
        if not cell.straightened:
            return []
        canvases = np.stack([self.canvas(image, cell.scale, cell.level, cell.stain) for image in cell.straightened])
        return self.classifier_for(cell.stain).predict_canvases(canvases, cell.angles)

    def _assignment_scores(self, detection_scores: np.ndarray) -> np.ndarray:
        # detections above the score threshold are chromosomes; only weaker candidates may be
        # rejected (their score is the evidence)
        return np.where(detection_scores >= self.score_threshold, 1.0, detection_scores)

    def resolve(
        self, image: np.ndarray, cell: SegmentedCell, predictions: list[IciPrediction]
    ) -> tuple[SegmentedCell, list[IciPrediction], list[Split]]:
        """Stage 3b (opt-in): detections holding two touching chromosomes split in two where the
        cell's assignment improves (karyoflow.clusters); the pieces follow the kept detections.
        `image` is the working representation the cell was cut from."""
        if not predictions:
            return cell, predictions, []
        classifier = self.classifier_for(cell.stain)
        method = classifier.preprocessing.method

        def classify_masks(masks: list[np.ndarray]) -> np.ndarray:
            pieces = [straighten(cut_out(image, mask)[0], method) for mask in masks]
            canvases = np.stack([self.canvas(piece.image, cell.scale, cell.level, cell.stain) for piece in pieces])
            angles = np.array([piece.angle for piece in pieces], dtype=np.float32)
            return np.stack([p.probabilities for p in classifier.predict_canvases(canvases, angles)])

        probabilities = np.stack([p.probabilities for p in predictions])
        more_candidates = None
        if self.pair_split_path is not None:
            more_candidates = self.pair_splitter().propose(image, cell.masks)
        splits = resolve_splits(
            cell.masks,
            probabilities,
            self._assignment_scores(cell.detection_scores),
            classify_masks,
            self.gain_penalty,
            self.loss_penalty,
            self.split_margin,
            more_candidates=more_candidates,
            more_margin=self.pair_split_margin,
        )
        if not splits:
            return cell, predictions, []
        split_parents = {split.parent for split in splits}
        kept = [i for i in range(len(predictions)) if i not in split_parents]
        piece_masks = [mask for split in splits for mask in split.masks]
        cuts = [cut_out(image, mask) for mask in piece_masks]
        pieces = [straighten(ici, method) for ici, _ in cuts]
        piece_scores = [cell.detection_scores[split.parent] for split in splits for _ in split.masks]
        piece_predictions = [
            prediction_from_probabilities(p, piece.angle)
            for p, piece in zip((p for split in splits for p in split.probabilities), pieces, strict=True)
        ]
        resolved = SegmentedCell(
            width=cell.width,
            height=cell.height,
            detection_scores=np.concatenate([cell.detection_scores[kept], np.asarray(piece_scores, np.float64)]),
            masks=np.concatenate([cell.masks[kept], np.stack(piece_masks)]),
            boxes=[cell.boxes[i] for i in kept] + [box for _, box in cuts],
            straightened=[cell.straightened[i] for i in kept] + [piece.image for piece in pieces],
            angles=np.concatenate([cell.angles[kept], np.array([piece.angle for piece in pieces], np.float32)]),
            scale=cell.scale,
            level=cell.level,
            stain=cell.stain,
        )
        return resolved, [predictions[i] for i in kept] + piece_predictions, splits

    def assemble(
        self, name: str, cell: SegmentedCell, predictions: list[IciPrediction], timings: dict[str, float]
    ) -> KaryotypeResult:
        """Stage 4: the karyotype-level assignment and the result (the karyogram is drawn from it)."""
        probabilities = np.stack([p.probabilities for p in predictions]) if predictions else np.zeros((0, 24))
        if self.assignment:
            karyotype = assign_karyotype(
                probabilities,
                self.gain_penalty,
                self.loss_penalty,
                detection_scores=self._assignment_scores(cell.detection_scores),
            )
        else:
            karyotype = karyotype_from_labels([p.class_index - 1 for p in predictions])
        chromosomes = []
        for position, prediction in enumerate(predictions):
            k = karyotype.labels[position]
            if k < 0:
                continue  # rejected by the assignment: not a chromosome of this cell
            chromosomes.append(
                Chromosome(
                    id=len(chromosomes) + 1,
                    label=LABELS[k],
                    class_index=k + 1,
                    score=float(prediction.probabilities[k]),
                    top3=prediction.top3,
                    argmax_label=prediction.label,
                    detection_score=float(cell.detection_scores[position]),
                    bbox=cell.boxes[position],
                    mask=cell.masks[position],
                    angle=prediction.angle,
                    straightened=cell.straightened[position],
                    candidate=position,
                )
            )
        karyotype = karyotype_from_labels([k for k in karyotype.labels if k >= 0], karyotype.sex_complement)
        margin, rival = (
            call_margin(
                probabilities, self.gain_penalty, self.loss_penalty, self._assignment_scores(cell.detection_scores)
            )
            if self.assignment
            else (math.inf, None)
        )
        return KaryotypeResult(
            name,
            cell.width,
            cell.height,
            chromosomes,
            karyotype,
            {k: round(v, 1) for k, v in timings.items()},
            self.models_for(cell.stain),
            stain=cell.stain,
            margin_nats=margin,
            rival=rival,
            review=review_items(chromosomes, karyotype),
        )

    def merged_pair_items(
        self, image: np.ndarray, cell: SegmentedCell, predictions: list[IciPrediction], result: KaryotypeResult
    ) -> list[ReviewItem]:
        """Where a cell short of chromosomes has a detection whose split in two (karyoflow.
        clusters) would make the assignment cheaper, even by less than the split margin."""
        if len(result.chromosomes) >= NORMAL_COUNT or not predictions:
            return []
        saved = self.split_margin, self.pair_split_margin
        self.split_margin = self.pair_split_margin = 0.0
        try:
            _, _, splits = self.resolve(image, cell, predictions)
        finally:
            self.split_margin, self.pair_split_margin = saved
        return split_items(splits, made=False)

    def analyse(
        self, image: np.ndarray | Image.Image, name: str = "image", stain: StainChoice | None = None
    ) -> KaryotypeResult:
        """All four stages in process, each timed. `stain`: q, g or auto (default: this
        Karyotyper's); a G-band image is worked on inverted."""
        timings: dict[str, float] = {}
        started = time.perf_counter()
        working, resolved = self.working_image(image, stain)
        detections = self.detect(working, resolved)
        timings["segment"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        cell = self.cut_and_straighten(working, detections, resolved)
        timings["straighten"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        predictions = self.classify(cell)
        timings["classify"] = (time.perf_counter() - started) * 1000
        splits: list[Split] = []
        if self.resolve_clusters:
            started = time.perf_counter()
            cell, predictions, splits = self.resolve(working, cell, predictions)
            timings["resolve"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        result = self.assemble(name, cell, predictions, timings)
        if self.assignment:
            # after the count item, before the per-chromosome ones
            result.review[1:1] = split_items(splits) + self.merged_pair_items(working, cell, predictions, result)
        result.timings_ms["assemble"] = round((time.perf_counter() - started) * 1000, 1)
        return result
