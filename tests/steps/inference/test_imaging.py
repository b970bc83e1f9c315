"""steps.imaging: the one preprocessing (bytes -> grayscale -> aspect-keeping resize -> zero-padded canvas).

Every image here is real encoded bytes written by Pillow; every op is checked eagerly and inside
tf.data (graph mode), and the two must agree bit for bit.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from steps.inference import imaging

H, W = 32, 128


def encode(array: np.ndarray, fmt: str, mode: str | None = None, **save_args) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format=fmt, **save_args)
    return buf.getvalue()


def page(height: int, width: int, box: tuple[int, int, int, int], paper: int = 255, ink: int = 0) -> np.ndarray:
    """Gray page of `paper` with a filled rectangle of `ink` at rows box[0]:box[1], columns box[2]:box[3]."""
    a = np.full((height, width), paper, np.uint8)
    a[box[0] : box[1], box[2] : box[3]] = ink
    return a


def ink_box(canvas: np.ndarray, threshold: int = 127) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) inclusive of the pixels above `threshold`."""
    ys, xs = np.nonzero(canvas[..., 0] > threshold)
    return ys.min(), ys.max(), xs.min(), xs.max()


def in_dataset(fn, *inputs):
    """Run `fn` on `inputs` inside tf.data (a traced graph), return the numpy result."""
    ds = tf.data.Dataset.from_tensors(tuple(tf.constant(x) for x in inputs)).map(fn)
    return next(iter(ds)).numpy()


WIDE = page(40, 200, (10, 30, 50, 150))  # 20 x 100 ink box, aspect 5
PNG = encode(WIDE, "PNG")


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", imaging.SUPPORTED_FORMATS)
def test_sniff_format_names_every_supported_format(fmt):
    assert imaging.sniff_format(encode(WIDE, fmt)) == fmt


@pytest.mark.parametrize(
    "data", [b"", b"hello world", b"<html><body>not found</body></html>", b"PK\x03\x04zip", b"\x00\x00\x00\x0cjP  "]
)
def test_sniff_format_rejects_what_is_not_a_supported_image(data):
    assert imaging.sniff_format(data) is None


def test_sniff_format_knows_both_tiff_byte_orders():
    assert imaging.sniff_format(b"II*\x00rest") == "TIFF"
    assert imaging.sniff_format(b"MM\x00*rest") == "TIFF"


# Each in a fresh process: which of the two loads tensorflow-io's op library first is the point.
_TIFF_BOTH_WAYS = """
import io, sys
import numpy as np, tensorflow as tf
from PIL import Image
from steps.inference import imaging
buf = io.BytesIO()
Image.fromarray(np.arange(12 * 20 * 3, dtype=np.uint8).reshape(12, 20, 3)).save(buf, format="TIFF")
data = buf.getvalue()
if sys.argv[1] == "tfio-first":
    import tensorflow_io as tfio
    theirs = tfio.experimental.image.decode_tiff(data)
ours = imaging.tiff_op()(data, index=0)
traced = tf.function(lambda d: imaging.tiff_op()(d, index=0))(tf.constant(data))
if sys.argv[1] == "ours-first":
    import tensorflow_io as tfio
    theirs = tfio.experimental.image.decode_tiff(data)
assert ours.shape == (12, 20, 4), ours.shape
assert (ours.numpy() == theirs.numpy()).all() and (traced.numpy() == ours.numpy()).all()
print("same", int(ours.numpy()[..., :3].sum()))
"""


@pytest.mark.parametrize("order", ["ours-first", "tfio-first"])
def test_tiff_op_decodes_as_tensorflow_io_does_whichever_loads_its_library_first(order):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(imaging.__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _TIFF_BOTH_WAYS, order], cwd=root, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["same", str(int(np.arange(12 * 20 * 3, dtype=np.uint8).sum()))]


@pytest.mark.parametrize("fmt", ["BMP", "GIF", "TIFF"])
def test_lossless_formats_give_the_same_canvas_as_png(fmt):
    reference = imaging.preprocess_bytes(tf.constant(PNG), H, W).numpy()
    canvas = imaging.preprocess_bytes(tf.constant(encode(WIDE, fmt)), H, W).numpy()
    np.testing.assert_array_equal(canvas, reference)


def test_jpeg_gives_nearly_the_same_canvas_as_png():
    reference = imaging.preprocess_bytes(tf.constant(PNG), H, W).numpy().astype(int)
    canvas = imaging.preprocess_bytes(tf.constant(encode(WIDE, "JPEG", quality=95)), H, W).numpy().astype(int)
    assert np.abs(canvas - reference).mean() < 3
    assert ink_box(canvas) == pytest.approx(ink_box(reference), abs=1)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_rgb_and_rgba_and_gray_alpha_decode_to_one_gray_channel(fmt):
    rgb = np.stack([WIDE] * 3, axis=-1)
    gray = imaging.decode_grayscale(tf.constant(encode(WIDE, fmt))).numpy()
    assert gray.shape == (40, 200, 1) and gray.dtype == np.uint8
    np.testing.assert_array_equal(gray[..., 0], WIDE)
    np.testing.assert_array_equal(imaging.decode_grayscale(tf.constant(encode(rgb, fmt))).numpy(), gray)
    rgba = np.concatenate([rgb, np.full((40, 200, 1), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(imaging.decode_grayscale(tf.constant(encode(rgba, fmt))).numpy(), gray)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_transparent_background_is_paper_not_ink(fmt):
    # Transparent pixels stored as (0, 0, 0, 0): dropping alpha would make the background black ink.
    rgba = np.zeros((40, 200, 4), np.uint8)
    rgba[10:30, 50:150] = (0, 0, 0, 255)
    canvas = imaging.preprocess_bytes(tf.constant(encode(rgba, fmt, "RGBA")), H, W).numpy()
    reference = imaging.preprocess_bytes(tf.constant(PNG), H, W).numpy()
    np.testing.assert_array_equal(canvas, reference)
    assert canvas[0, 0, 0] == 0 and canvas[H // 2, W // 2, 0] == 255


def test_gray_alpha_png_with_transparent_background_is_paper():
    la = np.zeros((40, 200, 2), np.uint8)
    la[10:30, 50:150] = (0, 255)
    canvas = imaging.preprocess_bytes(tf.constant(encode(la, "PNG", "LA")), H, W).numpy()
    np.testing.assert_array_equal(canvas, imaging.preprocess_bytes(tf.constant(PNG), H, W).numpy())


def test_animated_gif_uses_the_first_frame():
    first = Image.fromarray(WIDE).convert("P")
    second = Image.fromarray(page(40, 200, (0, 40, 0, 20))).convert("P")
    buf = io.BytesIO()
    first.save(buf, format="GIF", save_all=True, append_images=[second], duration=100, loop=0)
    canvas = imaging.preprocess_bytes(tf.constant(buf.getvalue()), H, W).numpy()
    np.testing.assert_array_equal(canvas, imaging.preprocess_bytes(tf.constant(PNG), H, W).numpy())


@pytest.mark.parametrize("fmt", imaging.SUPPORTED_FORMATS)
@pytest.mark.parametrize("damage", ["truncated", "header_only", "garbage_after_magic"])
def test_corrupt_bytes_raise_invalid_argument(fmt, damage):
    data = encode(WIDE, fmt)
    bad = {
        "truncated": data[: len(data) // 2],
        "header_only": data[:8],
        "garbage_after_magic": data[:4] + b"\x00" * 64,
    }[damage]
    with pytest.raises(tf.errors.InvalidArgumentError):
        imaging.preprocess_bytes(tf.constant(bad), H, W)


def test_bytes_of_no_image_format_raise_invalid_argument_eagerly_and_in_tf_data():
    with pytest.raises(tf.errors.InvalidArgumentError):
        imaging.preprocess_bytes(tf.constant(b"this is not an image"), H, W)
    with pytest.raises(tf.errors.InvalidArgumentError):
        in_dataset(lambda d: imaging.preprocess_bytes(d, H, W), b"this is not an image")


# --- geometry: aspect kept, padding is paper, ink high --------------------------------------------


def test_wide_image_keeps_the_aspect_ratio_of_its_ink():
    canvas = imaging.preprocess_bytes(tf.constant(PNG), H, W).numpy()
    assert canvas.shape == (H, W, 1) and canvas.dtype == np.uint8
    top, bottom, left, right = ink_box(canvas)
    scale = min(H / 40, W / 200)  # 0.64: width is the limit
    height, width = bottom - top + 1, right - left + 1
    assert abs(height - 20 * scale) <= 1 and abs(width - 100 * scale) <= 1
    # A stretched resize would give a 16 x 64 box (aspect 4); ours stays at 5 within one pixel of height.
    assert abs(width / height - 5.0) <= 5.0 / height
    # The scaled page (26 rows) is centred: the ink box is centred too.
    assert abs((top + bottom) / 2 - (H - 1) / 2) <= 1 and abs((left + right) / 2 - (W - 1) / 2) <= 1


def test_wide_image_is_padded_vertically_with_zeros():
    canvas = imaging.preprocess_bytes(tf.constant(PNG), H, W).numpy()[..., 0]
    # 40 x 200 scaled by 0.64 -> 26 x 128, so 3 rows of padding above and below.
    assert not canvas[:3].any() and not canvas[-3:].any()
    assert canvas[H // 2, W // 2] == 255


def test_tall_image_is_padded_horizontally_with_zeros():
    tall = page(200, 40, (20, 180, 10, 30))
    canvas = imaging.preprocess_bytes(tf.constant(encode(tall, "PNG")), H, W).numpy()[..., 0]
    # 200 x 40 scaled by 0.16 -> 32 x 6, centred at columns 61..66.
    columns = np.nonzero(canvas.any(axis=0))[0]
    assert columns.min() >= 61 and columns.max() <= 66
    top, bottom, _, _ = ink_box(canvas[..., None])
    assert abs((bottom - top + 1) - 160 * 0.16) <= 1
    assert not canvas[:, :61].any() and not canvas[:, 67:].any()


def test_paper_is_zero_and_the_darkest_ink_is_255_whatever_the_grey_levels():
    # A grey scan (paper 200, ink 90) is stretched: paper -> 0, darkest ink -> 255.
    grey = page(40, 200, (10, 30, 50, 150), paper=200, ink=90)
    canvas = imaging.preprocess_bytes(tf.constant(encode(grey, "PNG")), H, W).numpy()[..., 0]
    assert canvas.min() == 0 and canvas.max() == 255
    assert canvas[0, 0] == 0 and canvas[5, 5] == 0  # padding and paper alike
    assert canvas[H // 2, W // 2] == 255
    np.testing.assert_array_equal(canvas, imaging.preprocess_bytes(tf.constant(PNG), H, W).numpy()[..., 0])


def test_coloured_ink_on_white_is_ink():
    rgb = np.full((40, 200, 3), 255, np.uint8)
    rgb[10:30, 50:150] = (20, 40, 160)  # blue ballpoint
    canvas = imaging.preprocess_bytes(tf.constant(encode(rgb, "PNG")), H, W).numpy()[..., 0]
    assert canvas[H // 2, W // 2] == 255 and canvas[0, 0] == 0


def test_blank_page_gives_an_all_paper_canvas():
    canvas = imaging.preprocess_bytes(tf.constant(encode(np.full((40, 200), 255, np.uint8), "PNG")), H, W).numpy()
    assert canvas.shape == (H, W, 1) and not canvas.any()


def test_tiny_and_huge_aspect_images_still_fill_a_valid_canvas():
    for shape in [(1, 1), (3, 2000), (2000, 3)]:
        a = np.full(shape, 255, np.uint8)
        a.flat[: len(a.flat) // 4] = 0  # a quarter ink
        canvas = imaging.preprocess_bytes(tf.constant(encode(a, "PNG")), H, W).numpy()
        assert canvas.shape == (H, W, 1) and canvas.dtype == np.uint8
        assert canvas.any() or shape == (1, 1)


def test_to_model_input_scales_to_unit_float():
    canvas = tf.constant(np.array([0, 51, 255], np.uint8).reshape(1, 3, 1))
    x = imaging.to_model_input(canvas).numpy()
    assert x.dtype == np.float32
    np.testing.assert_allclose(x.ravel(), [0.0, 0.2, 1.0])


# --- eager and tf.data agree ---------------------------------------------------------------------

SAMPLES = {
    "png": PNG,
    "jpeg": encode(WIDE, "JPEG"),
    "tiff_rgba": encode(np.dstack([np.zeros((40, 200, 3), np.uint8), 255 - WIDE]), "TIFF", "RGBA"),
    "gif_tall": encode(page(200, 40, (20, 180, 10, 30)), "GIF"),
    "bmp_grey": encode(page(60, 90, (20, 40, 10, 80), paper=210, ink=40), "BMP"),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_decode_grayscale_is_the_same_eagerly_and_in_tf_data(name):
    eager = imaging.decode_grayscale(tf.constant(SAMPLES[name])).numpy()
    graph = in_dataset(imaging.decode_grayscale, SAMPLES[name])
    assert eager.dtype == np.uint8 and eager.ndim == 3 and eager.shape[-1] == 1
    np.testing.assert_array_equal(eager, graph)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_resize_pad_is_the_same_eagerly_and_in_tf_data(name):
    gray = imaging.decode_grayscale(tf.constant(SAMPLES[name])).numpy()
    eager = imaging.resize_pad(tf.constant(gray), H, W).numpy()
    graph = in_dataset(lambda g: imaging.resize_pad(g, H, W), gray)
    assert eager.shape == (H, W, 1) and eager.dtype == np.uint8
    np.testing.assert_array_equal(eager, graph)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_preprocess_bytes_is_the_same_eagerly_in_tf_data_and_in_tf_function(name):
    eager = imaging.preprocess_bytes(tf.constant(SAMPLES[name]), H, W).numpy()
    graph = in_dataset(lambda d: imaging.preprocess_bytes(d, H, W), SAMPLES[name])
    fn = tf.function(lambda d: imaging.preprocess_bytes(d, H, W), input_signature=[tf.TensorSpec([], tf.string)])
    assert eager.shape == (H, W, 1) and eager.dtype == np.uint8 and eager.any()
    np.testing.assert_array_equal(eager, graph)
    np.testing.assert_array_equal(eager, fn(tf.constant(SAMPLES[name])).numpy())


def test_to_model_input_is_the_same_eagerly_and_in_tf_data():
    canvas = imaging.preprocess_bytes(tf.constant(PNG), H, W).numpy()
    eager = imaging.to_model_input(tf.constant(canvas)).numpy()
    graph = in_dataset(imaging.to_model_input, canvas)
    assert eager.dtype == np.float32 and 0.0 <= eager.min() and eager.max() == 1.0
    np.testing.assert_array_equal(eager, graph)


def test_a_dataset_of_mixed_formats_and_sizes_maps_to_uniform_canvases():
    names = sorted(SAMPLES)
    ds = (
        tf.data.Dataset.from_tensor_slices([SAMPLES[n] for n in names])
        .map(lambda d: imaging.preprocess_bytes(d, H, W))
        .batch(len(names))
    )
    batch = next(iter(ds)).numpy()
    assert batch.shape == (len(names), H, W, 1) and batch.dtype == np.uint8
    for i, n in enumerate(names):
        np.testing.assert_array_equal(batch[i], imaging.preprocess_bytes(tf.constant(SAMPLES[n]), H, W).numpy())


# --- check: the cheap gate before decoding ---------------------------------------------------------


def _gif(frames: int, size=(50, 40)) -> bytes:
    import io

    from PIL import Image

    images = [Image.new("L", size, (i * 37) % 256) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=frames > 1, append_images=images[1:])
    return buf.getvalue()


@pytest.mark.parametrize("frames", [1, 2, 9])
def test_gif_frames_are_counted_without_decoding_as_pil_counts_them(frames):
    import io

    from PIL import Image

    data = _gif(frames)
    assert imaging.gif_frames(data) == Image.open(io.BytesIO(data)).n_frames == frames


def test_an_animated_gif_is_limited_by_all_its_frames_together():
    data = _gif(9)
    assert imaging.check(data, max_pixels=50 * 40 * 9) == "GIF"
    with pytest.raises(imaging.ImageTooLarge, match="GIF of 9 frames of 50x40 pixels exceeds the limit of 17999"):
        imaging.check(data, max_pixels=50 * 40 * 9 - 1)


def _animated(fmt: str, frames: int, size=(50, 40)) -> bytes:
    images = [Image.new("L", size, (i * 37) % 256) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, fmt, save_all=frames > 1, append_images=images[1:])
    return buf.getvalue()


@pytest.mark.parametrize("fmt, count", [("PNG", imaging.png_frames), ("TIFF", imaging.tiff_pages)])
@pytest.mark.parametrize("frames", [1, 3, 7])
def test_apng_frames_and_tiff_pages_are_counted_as_pil_counts_them(fmt, count, frames):
    data = _animated(fmt, frames)
    assert count(data) == Image.open(io.BytesIO(data)).n_frames == frames
    assert imaging.inspect(data) == imaging.ImageInfo(fmt, 50, 40, frames)


@pytest.mark.parametrize("fmt, unit", [("PNG", "frames"), ("TIFF", "pages"), ("GIF", "frames")])
def test_every_frame_counts_against_the_pixel_limit(fmt, unit):
    data = _animated(fmt, 5)
    assert imaging.inspect(data, max_pixels=50 * 40 * 5).pixels == 50 * 40 * 5
    with pytest.raises(imaging.ImageTooLarge, match=f"{fmt} of 5 {unit} of 50x40 pixels exceeds the limit of 9999"):
        imaging.inspect(data, max_pixels=50 * 40 * 5 - 1)


def test_a_tiff_whose_page_chain_loops_counts_each_page_once():
    data = bytearray(_animated("TIFF", 2))
    first = int.from_bytes(data[4:8], "little")
    entries = int.from_bytes(data[first : first + 2], "little")
    second_link = first + 2 + 12 * entries
    second = int.from_bytes(data[second_link : second_link + 4], "little")
    link = second + 2 + 12 * int.from_bytes(data[second : second + 2], "little")
    data[link : link + 4] = first.to_bytes(4, "little")  # page 2 points back at page 1
    assert imaging.tiff_pages(bytes(data)) == 2


@pytest.mark.parametrize(
    "data, error, message",
    [
        (b"", imaging.EmptyImage, "empty file"),
        (b"<html>login</html>", imaging.UnsupportedFormat, "not an image in a supported format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, imaging.CorruptImage, "corrupt PNG image"),
    ],
)
def test_check_names_what_is_wrong(data, error, message):
    with pytest.raises(error, match=message):
        imaging.check(data)


def _levels_by_sort(x: tf.Tensor) -> tuple[float, float]:
    """The definition: the sorted pixels' 90th and 1st percentile entries."""
    values = np.sort(x.numpy().reshape(-1))
    n = values.size
    return float(values[(n * 9) // 10]), float(values[n // 100])


@pytest.mark.parametrize("seed", range(6))
def test_levels_from_the_histogram_equal_the_sorted_percentiles(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 60)), int(rng.integers(1, 200)), 1)
    kind = seed % 3
    if kind == 0:  # uniform noise
        pixels = rng.integers(0, 256, shape)
    elif kind == 1:  # paper with a little ink
        pixels = np.where(rng.random(shape) < 0.1, rng.integers(0, 80, shape), rng.integers(200, 256, shape))
    else:  # a handful of grey levels, many ties
        pixels = rng.choice([0, 17, 128, 255], shape)
    x = tf.constant(pixels.astype(np.float32))
    paper, darkest = imaging._levels(x)
    assert (float(paper), float(darkest)) == _levels_by_sort(x)


# --- windowed reading (lines) ----------------------------------------------------------------------------


def line_canvas(ink_width: int, width: int = 768) -> np.ndarray:
    """What preprocess stores for a line `ink_width` px wide: the real resize of a page, centred on a canvas."""
    return imaging.preprocess_bytes(tf.constant(encode(page(40, ink_width, (8, 32, 0, ink_width)), "PNG")), H, width)


@pytest.mark.parametrize("ink_width", [30, 100, 320, 700])
def test_the_window_holds_all_the_ink_with_room_for_the_warp(ink_width):
    canvas = line_canvas(ink_width * 40 // 32)
    width = int(imaging.window_width(canvas[tf.newaxis])[0])
    cropped = imaging.crop_window(canvas[tf.newaxis])[0].numpy()
    assert width % imaging.WINDOW_STEP == 0 and width <= 768
    assert cropped.shape == (H, width, 1)
    assert int(cropped.astype(np.int64).sum()) == int(canvas.numpy().astype(np.int64).sum())  # no ink cut off
    _, _, left, right = ink_box(cropped)
    assert min(left, width - 1 - right) >= min(8, (768 - ink_width) // 2)  # a margin on both sides unless full
    assert width < ink_width + 128 or width == 768  # and not much more


def test_a_batch_is_cropped_to_its_widest_window_and_a_blank_canvas_to_the_smallest():
    batch = tf.stack([line_canvas(100), line_canvas(400), tf.zeros([H, 768, 1], tf.uint8)])
    widths = imaging.window_width(batch).numpy()
    assert widths[2] == imaging.WINDOW_STEP and widths[0] < widths[1]
    assert imaging.crop_window(batch).shape[2] == widths.max()
    assert imaging.crop_window(batch, tf.constant(128)).shape == (3, H, 128, 1)


def test_window_ops_in_tf_data_equal_eager():
    batch = tf.stack([line_canvas(50), line_canvas(260)])
    eager = imaging.crop_window(batch).numpy()
    (graph,) = list(tf.data.Dataset.from_tensors(batch).map(imaging.crop_window).as_numpy_iterator())
    np.testing.assert_array_equal(eager, graph)
