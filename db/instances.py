"""``Instances``: the instances of one image, the one shape an instance has everywhere (a proposal, a label
being edited, a training sample, what the gallery draws, what the export writes).

Data contract (N instances of one image of ``height`` x ``width`` pixels; one list entry per instance):
- ``ann_ids``: store annotation id, or None for an instance not stored yet.
- ``category_ids``: store (COCO) category id, never a contiguous model label.
- ``bboxes``: COCO xywh in pixels, ``[x, y, w, h]`` with x, y the top-left corner; kept as given (an imported
  ``[1, 2, 10, 8]`` stays ints, so exports are byte-identical). ``boxes()`` is the (N, 4) float64 array.
- ``segmentations``: a COCO segmentation: polygons ``[[x1, y1, x2, y2, ...], ...]``, a compressed RLE
  ``{"size": [h, w], "counts": str}`` (column-major), or None for a box- or keypoint-only instance.
  A mask is held as what it covers: ``crop(i)`` decodes it to a ``db.crops.Crop`` (the bool array of its
  box and the box's place) on demand and caches that; ``mask(i)`` makes the full bool (H, W) frame for a
  consumer that needs one (a loss target) and keeps nothing. ``set_crop`` / ``set_mask`` store an edited
  mask (encoded to RLE when next read) with its tight box.
- ``keypoints``: the flat COCO list ``[x, y, v] * K`` in the category's keypoint order, or None; K depends on
  the category. ``keypoints_xyv(i)`` is the (K, 3) float64 array.
- ``scores``: the model's score, or None for an instance a person drew.
- ``sources``: "model" | "human"; ``states``: "proposed" | "accepted" | "rejected".
- ``iscrowd``: 0 or 1. ``extras``: COCO fields beyond the standard ones, written back as given, or None.
- ``model_version_ids`` / ``originals``: for a model proposal, the version that made it and the proposal as
  made (to measure corrections), else None.
- ``areas`` / ``num_keypoints``: the values as imported, or None; ``area(i)`` and ``num_keypoints_of(i)``
  return them, else derive them (mask pixels, box area; keypoints with v > 0). ``tight_bbox(i)`` is the box
  around the mask. These derivations exist only here.
- Review bookkeeping of a labeling session: ``edited`` (changed by a person since loaded), ``deleted``,
  ``loaded_states`` (state as read from the store, None for a new instance).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Sequence

import numpy as np

from db import crops
from db import masks as mask_codec

STANDARD_FIELDS = {"id", "image_id", "category_id", "segmentation", "bbox", "area", "iscrowd", "keypoints",
                   "num_keypoints", "score"}
_COLUMNS = ("ann_ids", "category_ids", "bboxes", "segmentations", "keypoints", "scores", "sources", "states",
            "iscrowd", "areas", "num_keypoints", "extras", "model_version_ids", "originals", "edited", "deleted",
            "loaded_states", "_crops")


def _column(repr: bool = True) -> Any:  # noqa: A002 - dataclasses.field's own name
    """One list per column, one entry per instance."""
    return dataclasses.field(default_factory=list, repr=repr)


@dataclasses.dataclass(eq=False)
class Instances:
    height: int
    width: int
    ann_ids: list = _column()
    category_ids: list = _column()
    bboxes: list = _column()
    _segs: list = _column(repr=False)  # read through ``segmentations``
    keypoints: list = _column()
    scores: list = _column()
    sources: list = _column()
    states: list = _column()
    iscrowd: list = _column()
    areas: list = _column()
    num_keypoints: list = _column()
    extras: list = _column()
    model_version_ids: list = _column()
    originals: list = _column()
    edited: list = _column()
    deleted: list = _column()
    loaded_states: list = _column()
    _crops: list = _column(repr=False)  # decoded masks as db.crops.Crop, None until asked for
    _pending: set = dataclasses.field(default_factory=set, repr=False)  # edited masks not yet encoded to RLE

    @property
    def segmentations(self) -> list:
        """The COCO segmentations; a mask edited since the last read is encoded to RLE now (edits come
        faster than anyone reads them, so each is encoded once, when it is saved or drawn from RLE)."""
        if self._pending:
            for i in self._pending:
                self._segs[i] = crops.encode_crop(self._crops[i], self.height, self.width)
            self._pending.clear()
        return self._segs

    @segmentations.setter
    def segmentations(self, value: list) -> None:
        self._segs, self._pending = value, set()

    # --- building --------------------------------------------------------------------------------------
    def add(self, category_id: int, bbox: Sequence[float], *, segmentation: Any = None, mask: np.ndarray | None = None,
            keypoints: Sequence[float] | None = None, score: float | None = None, source: str = "human",
            state: str = "accepted", ann_id: int | None = None, iscrowd: int = 0, area: Any = None,
            num_keypoints: int | None = None, extra: dict | None = None, loaded_state: str | None = None,
            model_version_id: int | None = None, original: dict | None = None) -> int:
        """Append one instance (a ``mask`` is stored as RLE with its tight box); returns its index."""
        self.ann_ids.append(ann_id)
        self.category_ids.append(int(category_id))
        self.bboxes.append(list(bbox))
        self.segmentations.append(segmentation)
        self.keypoints.append(list(keypoints) if keypoints is not None else None)
        self.scores.append(None if score is None else float(score))
        self.sources.append(source)
        self.states.append(state)
        self.iscrowd.append(int(iscrowd))
        self.areas.append(area)
        self.num_keypoints.append(num_keypoints)
        self.extras.append(extra)
        self.model_version_ids.append(model_version_id)
        self.originals.append(original)
        self.edited.append(False)
        self.deleted.append(False)
        self.loaded_states.append(loaded_state)
        self._crops.append(None)
        i = len(self) - 1
        if mask is not None:
            self.set_mask(i, mask)
        return i

    @classmethod
    def from_coco(cls, anns: Iterable[dict[str, Any]], height: int, width: int, *, source: str = "human",
                  state: str = "accepted") -> "Instances":
        """From COCO annotation dicts (ids, when present, become ``ann_ids``)."""
        a = list(anns)
        return cls._columns(
            height, width, ann_ids=[d.get("id") for d in a], category_ids=[int(d["category_id"]) for d in a],
            bboxes=[list(d["bbox"]) for d in a], segmentations=[d.get("segmentation") for d in a],
            keypoints=[_listed(d.get("keypoints")) for d in a], scores=[_float(d.get("score")) for d in a],
            sources=[source] * len(a), states=[state] * len(a), iscrowd=[int(d.get("iscrowd", 0)) for d in a],
            areas=[d.get("area") for d in a], num_keypoints=[d.get("num_keypoints") for d in a],
            extras=[{k: v for k, v in d.items() if k not in STANDARD_FIELDS} or None for d in a],
            loaded_states=[None] * len(a))

    @classmethod
    def from_rows(cls, rows: Iterable[Any], height: int, width: int) -> "Instances":
        """From annotation rows (db.schema.Annotation, or result rows with its columns), as stored."""
        r = list(rows)
        full = bool(r) and hasattr(r[0], "model_version_id")  # ORM rows carry it; a narrower select may not
        return cls._columns(
            height, width, ann_ids=[a.id for a in r], category_ids=[a.category_id for a in r],
            bboxes=[a.bbox for a in r], segmentations=[a.segmentation for a in r],
            keypoints=[a.keypoints for a in r], scores=[a.score for a in r], sources=[a.source for a in r],
            states=[a.review_state for a in r], iscrowd=[a.iscrowd for a in r], areas=[a.area for a in r],
            num_keypoints=[a.num_keypoints for a in r], extras=[a.extra for a in r],
            model_version_ids=[a.model_version_id for a in r] if full else None,
            originals=[a.original for a in r] if full else None, loaded_states=[a.review_state for a in r])

    @classmethod
    def _columns(cls, height: int, width: int, **columns: list) -> "Instances":
        out = cls(height, width)
        n = len(columns["category_ids"])
        for col in _COLUMNS:
            setattr(out, col, columns.get(col) or ([False] * n if col in ("edited", "deleted") else [None] * n))
        return out

    # --- columns as a whole ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.category_ids)

    def __getitem__(self, i: int) -> "Instance":
        if not -len(self) <= i < len(self):
            raise IndexError(f"instance {i} of {len(self)}")
        return Instance(self, i % len(self))

    def __iter__(self):
        return (Instance(self, i) for i in range(len(self)))

    def append(self, one: "Instances") -> None:
        """Append the single instance in ``one`` (copied)."""
        for col in _COLUMNS:
            getattr(self, col).append(_copy(getattr(one, col)[0]))

    def take(self, index: Sequence[int] | np.ndarray) -> "Instances":
        """The instances at ``index`` (integer positions or a boolean mask over all N), copied."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else [int(i) for i in index]
        out = Instances(self.height, self.width)
        for col in _COLUMNS:
            src = getattr(self, col)
            setattr(out, col, [_copy(src[i]) for i in idx])
        return out

    def put(self, i: int, one: "Instances") -> None:
        """Replace instance ``i`` with the single instance in ``one`` (an undo snapshot)."""
        self._pending.discard(i)  # an edit not yet encoded is replaced, not encoded
        for col in _COLUMNS:
            getattr(self, col)[i] = _copy(getattr(one, col)[0])

    def remove(self, i: int) -> None:
        self.segmentations  # encode pending edits while their indices are valid  # noqa: B018
        for col in _COLUMNS:
            del getattr(self, col)[i]

    @classmethod
    def cat(cls, parts: Sequence["Instances"]) -> "Instances":
        out = cls(parts[0].height, parts[0].width)
        for p in parts:
            if (p.height, p.width) != (out.height, out.width):
                raise ValueError("cannot concatenate instances of images of different sizes")
            for col in _COLUMNS:
                getattr(out, col).extend(getattr(p, col))
        return out

    def boxes(self) -> np.ndarray:
        """(N, 4) float64 COCO xywh."""
        return np.asarray(self.bboxes, np.float64).reshape(-1, 4)

    def score_array(self) -> np.ndarray:
        """(N,) float64, NaN where there is no score."""
        return np.array([np.nan if s is None else s for s in self.scores], np.float64)

    # --- derived values (their only home) --------------------------------------------------------------
    def crop(self, i: int) -> crops.Crop | None:
        """Instance ``i``'s mask as its tight ``Crop``, decoded once (and kept: it costs what the mask
        covers); None without a segmentation. Raises db.masks.MaskError for an invalid segmentation."""
        if self._crops[i] is None and self._segs[i]:
            self._crops[i] = crops.decode_crop(self._segs[i], self.height, self.width)
        return self._crops[i]

    def mask(self, i: int) -> np.ndarray | None:
        """Instance ``i``'s bool (H, W) mask, made now and not kept (for a consumer that needs a full frame:
        a loss target, COCO evaluation); None without a segmentation."""
        if self._crops[i] is not None:
            return self._crops[i].full(self.height, self.width)
        if not self._segs[i]:
            return None
        return mask_codec.decode(self._segs[i], self.height, self.width)

    def forget_decoded(self) -> None:
        """Drop the decoded crops (each is decoded again when asked for); pending edits are encoded first."""
        self.segmentations  # noqa: B018
        self._crops = [None] * len(self)

    def set_mask(self, i: int, mask: np.ndarray) -> None:
        """Store an edited full-frame mask (held as its crop)."""
        m = np.asarray(mask, dtype=bool)
        if m.shape != (self.height, self.width):
            raise ValueError(f"mask is {m.shape[1]}x{m.shape[0]}, the image {self.width}x{self.height}")
        self.set_crop(i, crops.crop_of(m))

    def set_crop(self, i: int, crop: crops.Crop) -> None:
        """Store an edited mask given as a crop (cut to the image): RLE (encoded when next read), its tight
        box, its pixel area (the given values no longer apply)."""
        c = crops.clip(crop, self.height, self.width)
        self._crops[i] = c
        self._pending.add(i)  # its RLE is encoded when the segmentations are next read
        self.bboxes[i] = c.bbox_xywh()
        self.areas[i] = None

    def set_polygons(self, i: int, polygons: list[list[float]]) -> None:
        """Store an edited polygon segmentation (kept as polygons): its mask, tight box and pixel area follow."""
        self._pending.discard(i)
        self._segs[i] = [list(p) for p in polygons]
        self._crops[i] = crops.decode_crop(self._segs[i], self.height, self.width)
        self.bboxes[i] = self._crops[i].bbox_xywh()
        self.areas[i] = None

    def polygons(self, i: int) -> list[list[float]] | None:
        """Instance i's segmentation when it is COCO polygons (as given or as moved), else None."""
        seg = None if i in self._pending else self._segs[i]
        return seg if isinstance(seg, list) and seg else None

    def rle(self, i: int) -> dict[str, Any] | None:
        seg = self.segmentations[i]
        return mask_codec.to_rle(seg, self.height, self.width) if seg else None

    def area(self, i: int) -> float | int:
        """The area as given, else the mask's pixel count, else the box's area."""
        if self.areas[i] is not None:
            return self.areas[i]
        if self._crops[i] is not None:
            return float(self._crops[i].area())
        seg = self._segs[i]  # no mask decoded, so nothing pending for it
        if seg is not None:  # an empty polygon list has area 0
            return mask_codec.area(seg, self.height, self.width) if seg else 0.0
        return float(self.bboxes[i][2] * self.bboxes[i][3])

    def tight_bbox(self, i: int) -> list[float]:
        """The xywh box around the mask (COCO's convention: pixel extents); the stored box when the mask is
        empty or there is none."""
        if self._crops[i] is not None or self._segs[i]:
            box = self._mask_box(i)
            if box[2] > 0 and box[3] > 0:
                return box
        return [float(v) for v in self.bboxes[i]]

    def _mask_box(self, i: int) -> list[float]:
        """The box around the decoded crop when there is one (no encoding needed), else from the RLE."""
        if self._crops[i] is not None:
            return self._crops[i].bbox_xywh()
        return mask_codec.bbox_xywh(self._segs[i], self.height, self.width)

    def nbytes(self) -> int:
        """About what the instances hold in memory (segmentations, decoded crops, keypoints), in bytes."""
        total = 0
        for seg, c, k in zip(self._segs, self._crops, self.keypoints):
            if isinstance(seg, dict):
                counts = seg.get("counts")
                total += len(counts) if isinstance(counts, (str, bytes)) else 8 * len(counts or ())
            elif isinstance(seg, list):
                total += sum(8 * len(p) for p in seg if isinstance(p, list))
            total += c.nbytes if c is not None else 0
            total += 8 * len(k) if k else 0
            total += 3800  # the row's other columns as Python objects (measured: about 3.8 KB an instance)
        return total

    def num_keypoints_of(self, i: int) -> int | None:
        """As given, else the keypoints with v > 0; None without keypoints."""
        k = self.keypoints[i]
        if k is None:
            return None
        given = self.num_keypoints[i]
        return given if given is not None else sum(1 for v in k[2::3] if v > 0)

    def keypoints_xyv(self, i: int) -> np.ndarray | None:
        k = self.keypoints[i]
        return None if k is None else np.asarray(k, np.float64).reshape(-1, 3)

    # --- COCO and rows ---------------------------------------------------------------------------------
    def coco(self, i: int, image_id: int, *, with_score: bool = False, segmentation: Any = ...,
             keypoint_slots: int | None = None) -> dict[str, Any]:
        """Instance ``i`` as a COCO annotation dict, keys in COCO's order, extras after (sorted). The one
        place such a dict is built. ``keypoint_slots``: K of the instance's category when it has keypoints;
        an instance without any then gets K unlabeled ones (``[0, 0, 0] * K``, ``num_keypoints`` 0), as COCO's
        person_keypoints files have them, so that pycocotools' keypoint evaluation reads every annotation."""
        seg = self.segmentations[i] if segmentation is ... else segmentation
        d: dict[str, Any] = {}
        if self.ann_ids[i] is not None:
            d["id"] = self.ann_ids[i]
        d.update(image_id=image_id, category_id=self.category_ids[i], segmentation=seg if seg is not None else [],
                 area=self.area(i), bbox=self.bboxes[i], iscrowd=self.iscrowd[i])
        if self.keypoints[i] is not None:
            d["keypoints"] = self.keypoints[i]
            d["num_keypoints"] = self.num_keypoints_of(i)
        elif keypoint_slots:
            d["keypoints"] = [0] * (3 * keypoint_slots)
            d["num_keypoints"] = 0
        if with_score and self.scores[i] is not None:
            d["score"] = self.scores[i]
        extra = self.extras[i]
        if extra:
            d.update({k: extra[k] for k in sorted(extra) if k not in d})
        return d

    def to_coco(self, image_id: int, *, with_score: bool = False) -> list[dict[str, Any]]:
        return [self.coco(i, image_id, with_score=with_score) for i in range(len(self))]

    def row_values(self, i: int) -> dict[str, Any]:
        """The annotation row's content columns for instance ``i``."""
        k = self.keypoints[i]
        return dict(category_id=self.category_ids[i], segmentation=self.segmentations[i], bbox=self.bboxes[i],
                    area=self.area(i), iscrowd=self.iscrowd[i], keypoints=k,
                    num_keypoints=self.num_keypoints_of(i))


def _listed(v: Any) -> list | None:
    return None if v is None else list(v)


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _copy(v: Any) -> Any:
    if isinstance(v, list):
        return [_copy(x) for x in v]
    if isinstance(v, dict):
        return {k: _copy(x) for k, x in v.items()}
    return v  # numbers, strings and read-only db.crops.Crop: shared, not copied


class Instance:
    """Instance ``index`` of an ``Instances``, read and written by attribute (what a labeling edit touches).
    It refers to the container; it holds no data of its own."""

    __slots__ = ("_of", "_i")

    def __init__(self, of: Instances, index: int):
        self._of, self._i = of, index

    ann_id = property(lambda self: self._of.ann_ids[self._i], lambda self, v: self._set("ann_ids", v))
    category_id = property(lambda self: self._of.category_ids[self._i],
                           lambda self, v: self._set("category_ids", int(v)))
    bbox = property(lambda self: self._of.bboxes[self._i], lambda self, v: self._set("bboxes", list(v)))
    source = property(lambda self: self._of.sources[self._i], lambda self, v: self._set("sources", v))
    score = property(lambda self: self._of.scores[self._i], lambda self, v: self._set("scores", v))
    state = property(lambda self: self._of.states[self._i], lambda self, v: self._set("states", v))
    iscrowd = property(lambda self: self._of.iscrowd[self._i], lambda self, v: self._set("iscrowd", int(v)))
    edited = property(lambda self: self._of.edited[self._i], lambda self, v: self._set("edited", bool(v)))
    deleted = property(lambda self: self._of.deleted[self._i], lambda self, v: self._set("deleted", bool(v)))
    loaded_state = property(lambda self: self._of.loaded_states[self._i],
                            lambda self, v: self._set("loaded_states", v))

    def _set(self, column: str, value: Any) -> None:
        getattr(self._of, column)[self._i] = value

    @property
    def mask(self) -> np.ndarray | None:
        """The full frame, made now (Instances.mask): for a consumer that needs one."""
        return self._of.mask(self._i)

    @property
    def crop(self) -> crops.Crop | None:
        return self._of.crop(self._i)

    @crop.setter
    def crop(self, value: crops.Crop) -> None:
        self._of.set_crop(self._i, value)

    @mask.setter
    def mask(self, value: np.ndarray) -> None:
        self._of.set_mask(self._i, value)

    @property
    def keypoints(self) -> list | None:
        return self._of.keypoints[self._i]

    @keypoints.setter
    def keypoints(self, value: Sequence[float] | None) -> None:
        self._of.keypoints[self._i] = None if value is None else list(value)
        self._of.num_keypoints[self._i] = None  # counted from the new keypoints

    @property
    def area(self) -> float:
        return self._of.area(self._i)

    @property
    def touched(self) -> bool:
        """Changed by a person in any way since it was loaded (new, edited, reviewed or deleted)."""
        return self.ann_id is None or self.edited or self.deleted or self.state != self.loaded_state
