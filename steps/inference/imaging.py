"""The one image preprocessing of the project: bytes -> grayscale -> distortion-free resize -> padded canvas.

preprocess (to build the TFRecords), train (augmentation works on its output), the exported
inference model (so serve and infer), and the benchmarks all call these functions; there is no
second implementation to drift from (training/serving skew is the classic bug in HTR projects).
`check` is the cheap gate in front of decoding: it names what is wrong with bytes that are not a
usable image, as one of the ImageError types (serve maps each type to an HTTP status).

The canvas is uint8, ink high (255 = darkest ink) and paper 0, so zero padding is paper.
Rounding to uint8 before the model sees it makes the stored TFRecord image and the image that the
exported model computes from the same bytes bit-identical.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import struct

import tensorflow as tf

# Magic numbers of the formats we accept; TIFF is decoded by tensorflow-io (scanners write TIFF).
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_TF_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"GIF8")
SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF")


DEFAULT_MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs)


class ImageError(ValueError):
    """Bytes that are not a usable image; the subclass says why, the message says it to a person."""


class EmptyImage(ImageError):
    """Nothing was sent, or the file is 0 bytes."""


class UnsupportedFormat(ImageError):
    """Not one of SUPPORTED_FORMATS (an HTML page, a PDF, text, ...)."""


class ImageTooLarge(ImageError):
    """More pixels than the limit: a decompression bomb or a huge scan."""


class CorruptImage(ImageError):
    """A supported format whose data cannot be decoded (truncated, damaged)."""


class BlankImage(ImageError):
    """An image with no ink on it: nothing to read (preprocess drops these too)."""


def sniff_format(data: bytes) -> str | None:
    """Name of the image format of `data` from its magic number, or None if unsupported."""
    for magic, name in zip(_TF_MAGIC + _TIFF_MAGIC, ("PNG", "JPEG", "BMP", "GIF", "TIFF", "TIFF")):
        if data.startswith(magic):
            return name
    return None


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What an image's header says it will cost to decode."""

    format: str
    width: int
    height: int
    frames: int  # GIF and APNG frames, TIFF pages; 1 for a still image

    @property
    def pixels(self) -> int:
        """The work budget of the image: every frame counts, whether or not the decoder reads it."""
        return self.frames * self.width * self.height


@functools.cache
def _pil():
    """PIL's Image module with its plugins registered; imported on first use, once (a server inspects every
    image: an import statement per call takes the import lock in every request thread)."""
    from PIL import Image

    Image.init()
    return Image


def inspect(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """The header facts of `data` if it is worth decoding, else the ImageError saying why not.

    Reads only headers and block structure, through the PIL plugin of the sniffed format: a 30000x30000
    bomb of a few hundred bytes costs nothing. Calling the plugin directly skips Image.open's own bomb
    check, so PIL's process-wide MAX_IMAGE_PIXELS is never touched and our limit is the only one.
    The limit is on frames x width x height for every format, by design: the GIF decoder expands every
    frame, and an APNG or multi-page TIFF that is within it whole is within it whatever is decoded
    (only the first frame or page is read).
    """
    if not data:
        raise EmptyImage("empty file")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormat(f"not an image in a supported format ({', '.join(SUPPORTED_FORMATS)})")
    try:
        with _pil().OPEN[fmt][0](io.BytesIO(data)) as im:
            width, height = im.size
    except Exception:
        raise CorruptImage(f"corrupt {fmt} image") from None
    if width * height > max_pixels:
        raise ImageTooLarge(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels")
    frames = {"GIF": gif_frames, "PNG": png_frames, "TIFF": tiff_pages}.get(fmt, lambda _: 1)(data)
    info = ImageInfo(fmt, width, height, frames)
    if info.pixels > max_pixels:
        unit = "pages" if fmt == "TIFF" else "frames"
        raise ImageTooLarge(
            f"{fmt} of {frames} {unit} of {width}x{height} pixels exceeds the limit of {max_pixels} pixels"
        )
    return info


def check(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """The format name of `data` if it is worth decoding, else the ImageError saying why not (see inspect)."""
    return inspect(data, max_pixels).format


def gif_frames(data: bytes) -> int:
    """Number of image frames in a GIF, read off its block structure without decoding any pixels.

    A malformed file counts the frames seen so far (at least 1); the decoder will refuse it later.
    """
    if len(data) < 13:
        return 1
    pos, flags = 13, data[10]
    if flags & 0x80:  # global colour table
        pos += 3 * 2 ** ((flags & 7) + 1)
    frames = 0
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then data sub-blocks
            pos = _skip_sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW min code size, sub-blocks
            frames += 1
            if pos + 10 > len(data):
                break
            local = data[pos + 9]
            pos += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
            pos = _skip_sub_blocks(data, pos + 1)
        else:
            break
    return max(frames, 1)


def png_frames(data: bytes) -> int:
    """Frames an APNG declares in its acTL chunk (which precedes the image data); 1 for a plain PNG."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"acTL" and length >= 8 and pos + 12 <= len(data):
            return max(1, struct.unpack(">I", data[pos + 8 : pos + 12])[0])
        if kind == b"IDAT":
            break
        pos += 12 + length
    return 1


def tiff_pages(data: bytes) -> int:
    """Pages (image file directories) of a classic TIFF, counted along the IFD chain without decoding.

    A chain that loops or leaves the file ends the count; the decoder will refuse a broken file later.
    """
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        return 1
    offset, seen = struct.unpack(order + "I", data[4:8])[0], set()
    while 8 <= offset <= len(data) - 2 and offset not in seen:
        seen.add(offset)
        (entries,) = struct.unpack(order + "H", data[offset : offset + 2])
        end = offset + 2 + 12 * entries
        if end + 4 > len(data):
            break
        (offset,) = struct.unpack(order + "I", data[end : end + 4])
    return max(1, len(seen))


def _skip_sub_blocks(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos]:
        pos += data[pos] + 1
    return pos + 1


@functools.cache
def tiff_op():
    """tensorflow-io's IO>DecodeTiff op: registers it (SavedModels with a TIFF branch need it) and wraps it.

    Only its kernel library is loaded, not `tensorflow_io`'s Python ops: those generate a Python wrapper for
    every op of the library, 0.16-0.25 s of each process's start (a third of preprocessing the quick set's
    images on 2 cores), where loading the library and wrapping this one op takes 0.03 s. Same op, same graph.
    """
    import importlib.util
    import os

    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.framework import _pywrap_python_op_gen, op_def_registry

    spec = importlib.util.find_spec("tensorflow_io")
    tf.load_library(os.path.join(spec.submodule_search_locations[0], "python", "ops", "libtensorflow_io.so"))
    op_list = op_def_pb2.OpList(op=[op_def_registry.get("IO>DecodeTiff")])
    module: dict = {}
    exec(_pywrap_python_op_gen.GetPythonWrappers(op_list.SerializeToString()), module)  # what load_op_library runs
    return module["io_decode_tiff"]


def _decode_tiff(data: tf.Tensor) -> tf.Tensor:
    return tiff_op()(data, index=0)  # first page, RGBA uint8 (as tfio.experimental.image.decode_tiff)


def _flatten_to_gray(image: tf.Tensor) -> tf.Tensor:
    """uint8 [H, W, C] with C in 1..4 -> uint8 [H, W, 1], alpha composited over white.

    Transparent pixels are often stored as (0, 0, 0, 0): dropping alpha would turn the whole
    background into ink, so it is blended onto paper instead.
    """
    x = tf.cast(image, tf.float32)
    channels = tf.shape(x)[-1]
    has_alpha = tf.equal(channels % 2, 0)
    alpha = tf.cond(has_alpha, lambda: x[..., -1:] / 255.0, lambda: tf.ones_like(x[..., :1]))
    colour = tf.cond(has_alpha, lambda: x[..., :-1], lambda: x)
    gray = tf.cond(
        tf.shape(colour)[-1] >= 3, lambda: tf.image.rgb_to_grayscale(colour[..., :3]), lambda: colour[..., :1]
    )
    gray = gray * alpha + 255.0 * (1.0 - alpha)
    return tf.cast(tf.clip_by_value(tf.round(gray), 0.0, 255.0), tf.uint8)


def decode_grayscale(data: tf.Tensor) -> tf.Tensor:
    """Encoded image bytes (scalar string) -> uint8 [H, W, 1]; first frame of a GIF; TIFF via tensorflow-io."""
    is_tiff = tf.logical_or(
        tf.strings.substr(data, 0, 4) == _TIFF_MAGIC[0], tf.strings.substr(data, 0, 4) == _TIFF_MAGIC[1]
    )
    image = tf.cond(
        is_tiff,
        lambda: _decode_tiff(data),
        lambda: tf.io.decode_image(data, channels=0, expand_animations=False, dtype=tf.uint8),
    )
    return tf.ensure_shape(_flatten_to_gray(tf.ensure_shape(image, [None, None, None])), [None, None, 1])


def _levels(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(paper, darkest ink) grey levels: the 90th and 1st percentiles of the pixels.

    Not the maximum, which a single noise speck sets; not the median, which is ink in a tight crop
    of a dot or a dash. Any crop with at least a tenth of paper gets its paper level right.
    """
    # The pixels are whole grey levels 0..255 (uint8 cast to float), so order statistics come off a
    # 256-bin histogram exactly as off a sort, in linear time (the sort was most of preprocessing's cost).
    counts = tf.math.bincount(tf.cast(tf.reshape(x, [-1]), tf.int32), minlength=256, maxlength=256)
    cumulative = tf.cumsum(counts)
    n = cumulative[-1]

    def kth(k: tf.Tensor) -> tf.Tensor:  # the k-th smallest pixel (0-based), as the sorted values[k]
        return tf.cast(tf.argmax(tf.cast(cumulative > k, tf.int32)), tf.float32)

    return kth((n * 9) // 10), kth(n // 100)


def resize_pad(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """uint8 [H, W, 1] dark-ink-on-light image -> uint8 [height, width, 1] canvas, ink high, aspect kept.

    The image is scaled to fit the canvas without distortion (never stretched), then centred with
    background padding, as in the Keras IAM example but with ink-high pixels so padding is blank.
    Contrast is stretched per image first (paper -> 0, darkest ink -> 255): scans differ in paper
    grey and ink strength, and an unstretched grey paper would leave a visible edge at the padding.
    """
    x = tf.cast(image, tf.float32)
    paper, darkest = _levels(x)
    ink = tf.clip_by_value((paper - x) * (255.0 / tf.maximum(paper - darkest, 1.0)), 0.0, 255.0)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(height / shape[0], width / shape[1])
    new_h = tf.clip_by_value(tf.cast(tf.round(shape[0] * scale), tf.int32), 1, height)
    new_w = tf.clip_by_value(tf.cast(tf.round(shape[1] * scale), tf.int32), 1, width)
    resized = tf.image.resize(ink, [new_h, new_w], method="area", antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    top = (height - new_h) // 2
    left = (width - new_w) // 2
    canvas = tf.pad(resized, [[top, height - new_h - top], [left, width - new_w - left], [0, 0]])
    return tf.ensure_shape(canvas, [height, width, 1])


def preprocess_bytes(data: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Encoded image bytes -> uint8 [height, width, 1] model canvas. Usable eagerly and in tf.data/graphs."""
    return resize_pad(decode_grayscale(data), height, width)


def to_model_input(canvas: tf.Tensor) -> tf.Tensor:
    """uint8 canvas -> float32 in [0, 1], the model's input scaling."""
    return tf.cast(canvas, tf.float32) / 255.0


# Windowed reading (lines): a line canvas is as wide as the longest lines need, but the median line fills
# less than half of it, and the network's cost grows with the width it reads. A windowed model reads only
# the centred window that holds the ink, its width rounded up to a multiple of WINDOW_STEP (few distinct
# widths: few traced graphs). Training batches lines of one window width together (steps/training/inputs.py)
# and the exported model reads each line in its own window (training/model.read_canvases), so a line is read
# with the padding it was trained with.
WINDOW_STEP = 64
INK_LEVEL = 32  # fainter pixels are paper grain, not ink
WINDOW_MARGIN = 1.125  # room for the training warp's scale (up to 1.1) and shift (4 px) to keep the ink inside


def window_width(canvases: tf.Tensor) -> tf.Tensor:
    """uint8 canvases [B, H, W, 1] -> int32 [B]: the width of the centred window holding each canvas's ink,
    with a margin, rounded up to WINDOW_STEP and at most W; a canvas without ink gets WINDOW_STEP."""
    full = tf.shape(canvases)[2]
    ink = tf.reduce_any(canvases[..., 0] > INK_LEVEL, axis=1)  # [B, W]: columns holding ink
    columns = tf.range(full)
    centre = full // 2
    # the distance from the centre to the farthest ink column on either side
    reach = tf.reduce_max(tf.where(ink, tf.maximum(centre - columns, columns + 1 - centre), 0), axis=1)
    needed = tf.cast(tf.math.ceil(tf.cast(2 * reach, tf.float32) * WINDOW_MARGIN), tf.int32) + 8
    rounded = -(-needed // WINDOW_STEP) * WINDOW_STEP
    return tf.clip_by_value(rounded, WINDOW_STEP, tf.maximum(full, WINDOW_STEP))


def crop_window(canvases: tf.Tensor, width: tf.Tensor | None = None) -> tf.Tensor:
    """uint8 canvases [B, H, W, 1] -> [B, H, width, 1]: the centred window of `width` columns (default: the
    widest window_width of the batch, so no canvas loses ink)."""
    if width is None:
        width = tf.reduce_max(window_width(canvases))
    full = tf.shape(canvases)[2]
    width = tf.minimum(width, full)
    start = (full - width) // 2
    return canvases[:, :, start : start + width, :]
