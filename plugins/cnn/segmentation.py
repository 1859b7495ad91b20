"""Running the segmentation network over whole images (batched) and cutting its answer into regions.

`segment` takes the contrast grids of several images, pads them to one size, and runs them through the
network together: on a GPU with mixed precision from pinned memory with non-blocking copies, on the CPU in
float32 with channels-last memory. `regions` turns one image's class probabilities into connected regions:
the pixels whose best class is thin (1-3L) or junk form regions together, and each region is thin or junk by
its mean probabilities (a faint monolayer and a residue film look alike pixel by pixel; the region's shape
and surroundings, which the network sees, decide); few and bulk form their own regions; the substrate none.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from scipy import ndimage

from flakehunter.plugins.cnn.model_store import LoadedModel
from flakehunter.training.segment_input import CLASSES, GridContrast, contrast_grid, network_input

THIN = (1, 2, 3)
FEW, BULK, JUNK = 4, 5, 6
_MULTIPLE = 16  # the U-Net halves the size four times


@dataclass
class Region:
    """A connected region of one kind on the grid.

    ``kind`` is "thin", "junk", "few" or "bulk"; ``probs`` the mean class probabilities over its pixels; ``pixels``
    (rows, cols) its grid pixels; ``bbox`` (row0, col0, row1, col1) on the grid, exclusive.
    """

    kind: str
    pixels: tuple[np.ndarray, np.ndarray]
    bbox: tuple[int, int, int, int]
    probs: np.ndarray
    touches_border: bool
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def area(self) -> int:
        return len(self.pixels[0])

    @property
    def centroid(self) -> tuple[float, float]:
        return float(self.pixels[0].mean()), float(self.pixels[1].mean())

    def best_class(self) -> int:
        """The class index the region's mean probabilities favour among its kind's classes."""
        if self.kind == "thin":
            return int(THIN[int(np.argmax(self.probs[list(THIN)]))])
        return {"few": FEW, "bulk": BULK}.get(self.kind, JUNK)

    def confidence(self) -> float:
        """Mean probability of the region's kind (thin: the three thin classes together)."""
        if self.kind == "thin":
            return float(self.probs[list(THIN)].sum())
        return float(self.probs[self.best_class()])


_grids: OrderedDict[tuple[str, float | None], GridContrast] = OrderedDict()
_grids_lock = threading.Lock()


def fingerprint(image: np.ndarray) -> str:
    """A short hash of an image's pixels (a sparse sample), its shape and type."""
    sample = np.ascontiguousarray(image[::37, ::41])
    return hashlib.blake2b(sample.tobytes() + str((image.shape, image.dtype)).encode(), digest_size=12).hexdigest()


def shared_grid(image: np.ndarray, pixel_size_um: float | None) -> GridContrast:
    """`contrast_grid` of an image, computed once when both CNN detectors look at the same image (a small cache
    keyed by a fingerprint of the pixels)."""
    key = (fingerprint(image), pixel_size_um)
    with _grids_lock:
        found = _grids.get(key)
        if found is not None:
            _grids.move_to_end(key)
            return found
    grid = contrast_grid(image, pixel_size_um)
    with _grids_lock:
        _grids[key] = grid
        while len(_grids) > 8:
            _grids.popitem(last=False)
    return grid


def segment(model: LoadedModel, grids: Sequence[GridContrast], max_batch: int = 32) -> list[np.ndarray]:
    """(K, rows, cols) float32 class probabilities of each grid's image, batched up to ``max_batch``."""
    out: list[np.ndarray] = []
    for start in range(0, len(grids), max_batch):
        chunk = grids[start : start + max_batch]
        inputs = [network_input(g.contrast) for g in chunk]
        rows = max(x.shape[1] for x in inputs)
        cols = max(x.shape[2] for x in inputs)
        rows, cols = -(-rows // _MULTIPLE) * _MULTIPLE, -(-cols // _MULTIPLE) * _MULTIPLE
        batch = np.zeros((len(inputs), inputs[0].shape[0], rows, cols), np.float32)
        for i, x in enumerate(inputs):
            batch[i, :, : x.shape[1], : x.shape[2]] = x
        probs = _forward(model, batch)
        out.extend(p[:, : x.shape[1], : x.shape[2]] for p, x in zip(probs, inputs, strict=True))
    return out


def _forward(model: LoadedModel, batch: np.ndarray) -> np.ndarray:
    tensor = torch.from_numpy(batch)
    with torch.inference_mode():
        if model.device == "cuda":
            x = tensor.pin_memory().to("cuda", non_blocking=True)
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                logits = model.network(x)
            probs = torch.softmax(logits.float(), dim=1)
        else:
            x = tensor.contiguous(memory_format=torch.channels_last)
            probs = torch.softmax(model.network(x), dim=1)
        result: np.ndarray = probs.cpu().numpy()
    return result


def regions(probs: np.ndarray, min_area: int = 2) -> tuple[list[Region], np.ndarray]:
    """Connected thin, few and bulk regions of at least ``min_area`` grid pixels, and the argmax class map."""
    classes = probs.argmax(axis=0).astype(np.uint8)
    rows, cols = classes.shape
    found: list[Region] = []
    thin_or_junk = ((classes >= 1) & (classes <= 3)) | (classes == JUNK)
    for kind, mask in (("thin", thin_or_junk), ("few", classes == FEW), ("bulk", classes == BULK)):
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
        if count <= 1:
            continue
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            local = labels[box] == index
            rr, cc = np.nonzero(local)
            if len(rr) < min_area:
                continue
            rr = rr + box[0].start
            cc = cc + box[1].start
            mean = probs[:, rr, cc].mean(axis=1)
            bbox = (box[0].start, box[1].start, box[0].stop, box[1].stop)
            border = bbox[0] == 0 or bbox[1] == 0 or bbox[2] == rows or bbox[3] == cols
            kind_here = "junk" if kind == "thin" and mean[JUNK] > mean[list(THIN)].sum() else kind
            found.append(Region(kind_here, (rr, cc), bbox, mean, border))
    return found, classes


def class_name(index: int) -> str:
    return CLASSES[index]
