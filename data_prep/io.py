"""File input/output: ``read_image`` for PNG/JPEG/DICOM, mask reading, and atomic writes (a crash
mid-write never leaves a half-written file), PNGs included (``gray8``, ``write_png``)."""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def gray8(image: np.ndarray) -> np.ndarray:
    """A gray image in [0, 1] as uint8 (clipped, rounded)."""
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def write_png(path: str | os.PathLike, arr: np.ndarray) -> None:
    """``arr`` (uint8 or uint16, gray or BGR) as a PNG, written atomically."""
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Build a whole folder in a temporary sibling and rename it into place on success.

    Raises ``FileExistsError`` if ``path`` exists and is not empty; on any error the temporary
    folder is removed, so ``path`` is either complete or absent.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path}: output folder exists and is not empty")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if absent) for the block: another
    process (or thread) taking the same lock waits. The OS releases it if the holder dies."""
    import fcntl  # POSIX only, so imported where used
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process holding %s", path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- image reading

class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the problem."""


_RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _dicom_output_range(ds) -> tuple[float, float]:
    """Range of the values after the modality and VOI transforms, as pydicom's
    ``apply_windowing`` defines it (PS3.3 C.11.2.1.2): the stored range, rescaled."""
    if ds.get("ModalityLUTSequence"):
        lo, hi = 0.0, float(2 ** ds.ModalityLUTSequence[0].LUTDescriptor[2] - 1)
    elif ds.get("PixelRepresentation", 0) == 0:
        lo, hi = 0.0, float(2 ** ds.BitsStored - 1)
    else:
        lo, hi = float(-(2 ** (ds.BitsStored - 1))), float(2 ** (ds.BitsStored - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = sorted((lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)))
    return lo, hi


def monochrome_to_unit(arr: np.ndarray, ds, lookup: bool = True) -> np.ndarray:
    """A monochrome DICOM frame through pydicom's modality LUT (rescale) and VOI LUT
    (windowing), scaled from the range they map to (:func:`_dicom_output_range`) onto [0, 1],
    MONOCHROME1 inverted; float32.

    Every step is a function of the stored value alone, so for integer pixels (``lookup``) the
    chain runs once over every value of the pixel type (at most 65,536) and the frame is looked up
    in that table: the same figures as running it over every pixel (tested), without its float64
    temporaries — for a 1024² radiograph 64 K values instead of 1 M pixels, which makes reading
    about twice as fast and leaves memory bandwidth to the other cores (issue 19)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    def chain(values):
        v = apply_modality_lut(values, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            v = apply_voi_lut(v, ds)
        v = (np.asarray(v, np.float64) - lo) / max(hi - lo, 1e-12)
        if str(ds.get("PhotometricInterpretation")) == "MONOCHROME1":  # high values are dark: invert
            v = 1.0 - v
        return np.clip(v, 0.0, 1.0).astype(np.float32)

    lo, hi = _dicom_output_range(ds)
    if not (lookup and arr.dtype.kind in "iu" and arr.dtype.itemsize <= 2):
        return chain(arr)
    # one table entry per bit pattern of the pixel type, ordered as the unsigned view reads it
    native = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    unsigned = native.view(f"u{arr.dtype.itemsize}")
    table = chain(np.arange(2 ** (8 * arr.dtype.itemsize), dtype=unsigned.dtype).view(native.dtype))
    return table[unsigned]


def _read_dicom(path: Path) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError) as e:
        raise ImageReadError(f"{path}: not a readable DICOM file ({e})") from e
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageReadError(f"{path}: DICOM file has no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as e:  # pydicom raises many types for broken or unsupported pixel data
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data ({type(e).__name__}: {e})") from e
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]  # a radiograph has one frame; take the first of a multi-frame file
    if photometric.startswith("MONOCHROME"):
        return monochrome_to_unit(arr, ds)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # RGB / YBR decoded to RGB by pydicom
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space
            arr = convert_color_space(arr, photometric, "RGB")
        scale = float(2 ** int(ds.BitsStored) - 1)
        gray = cv2.cvtColor((arr[..., :3] / scale).astype(np.float32), cv2.COLOR_RGB2GRAY)
        return np.clip(gray, 0.0, 1.0)
    raise ImageReadError(f"{path}: unsupported DICOM photometric interpretation {photometric!r}")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_markers(path: Path, data: bytes) -> None:
    """A PNG/JPEG must start with its signature; OpenCV decodes truncated files partially with
    only a warning, so check the end-of-image marker ourselves."""
    suffix = path.suffix.lower()
    if suffix == ".png" and not data.startswith(PNG_SIGNATURE):
        raise ImageReadError(f"{path}: not a valid PNG image (no PNG signature)")
    if suffix in (".jpg", ".jpeg") and not data.startswith(b"\xff\xd8"):
        raise ImageReadError(f"{path}: not a valid JPEG image (no start-of-image marker)")
    if suffix == ".png" and b"IEND" not in data[-16:]:
        raise ImageReadError(f"{path}: truncated PNG (no IEND chunk at the end)")
    if suffix in (".jpg", ".jpeg") and b"\xff\xd9" not in data[-64:]:
        raise ImageReadError(f"{path}: truncated JPEG (no end-of-image marker)")


def _to_gray_float(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2GRAY)
    elif arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    elif arr.ndim != 2:
        raise ImageReadError(f"{path}: unsupported image shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        return np.clip(arr, 0.0, 1.0).astype(np.float32)
    raise ImageReadError(f"{path}: unsupported pixel type {arr.dtype}")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG, JPEG, TIFF, BMP or DICOM file as a 2-D float32 gray image in [0, 1].

    DICOM (pydicom): modality LUT (rescale slope/intercept) and VOI LUT/windowing applied where
    present, scaled by the range they map to, MONOCHROME1 inverted, the first frame of
    multi-frame files, RGB/YBR converted to gray. Raster files (OpenCV): 8- and 16-bit,
    gray/RGB/RGBA. Raises :class:`ImageReadError` naming the file for anything else.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    if _is_dicom(path):
        img = _read_dicom(path)
    else:
        if path.suffix.lower() not in _RASTER_SUFFIXES:
            raise ImageReadError(f"{path}: unsupported image format {path.suffix!r}")
        data = path.read_bytes()
        _check_markers(path, data)
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise ImageReadError(f"{path}: corrupt or unsupported image (OpenCV could not decode it)")
        img = _to_gray_float(arr, path)
    if img.size == 0 or min(img.shape) < 2:
        raise ImageReadError(f"{path}: image has no pixels (shape {img.shape})")
    return img


def read_mask(paths) -> np.ndarray:
    """Read one or several binary masks (e.g. Montgomery's left and right lungs) as their union,
    uint8 0/1 (threshold 0.5). A mask with more than 1% of its pixels between 0.1 and 0.9 is not
    binary (a grayscale image given as a mask, say) and is refused; masks must share one size."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise ValueError("read_mask: no mask paths given")
    union = None
    for p in paths:
        m = read_image(p)
        if union is not None and m.shape != union.shape:
            raise ImageReadError(f"{p}: mask size {m.shape} differs from {paths[0]} {union.shape}")
        grey = float(((m > 0.1) & (m < 0.9)).mean())
        if grey > 0.01:
            raise ImageReadError(f"{p}: mask is not binary ({grey:.1%} of pixels are neither 0 nor 1)")
        binary = m > 0.5
        union = binary if union is None else (union | binary)
    return union.astype(np.uint8)
