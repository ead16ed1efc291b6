"""Image input and video output for the video runtime (numpy + Pillow, no torch).

Input contract (`read_image`): a path to an image file, a PIL RGB image, or a numpy array
[H, W, 3] (uint8 0..255, or float in [0, 1]). Anything else (other PIL modes, other shapes,
empty images, out-of-range floats) is an InvalidArgumentError naming the fix. The result is a
float32 array [3, H, W] in [0, 1] — what diffusers' StableVideoDiffusionPipeline works on.

Preprocessing reproduces the pipeline: the VAE sees the image resized to the run's height and
width (Lanczos, as diffusers resizes PIL input) and mapped to [-1, 1]; the CLIP encoder sees
the original image at its fixed side S: unchanged when it already is S x S (diffusers' tensor
input path), else blurred and bicubic-resized exactly as diffusers' `_resize_with_antialiasing`,
then normalised with the package's mean and std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InvalidArgumentError


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a base dependency
        raise InvalidArgumentError("image input and output need Pillow; pip install pillow") from None
    return Image


def read_image(image: Any) -> np.ndarray:
    """The input image as float32 [3, H, W] in [0, 1] (see the module docstring)."""
    Image = _pil()
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise InvalidArgumentError(f"image {path} does not exist; pass an existing PNG or JPEG file")
        try:
            with Image.open(path) as opened:
                opened.load()
                image = opened.copy()
        except (OSError, ValueError) as error:
            raise InvalidArgumentError(f"image {path} is not a readable image ({error})") from None
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise InvalidArgumentError(f"image mode is {image.mode}, expected RGB; convert it first "
                                       "(PIL: image.convert('RGB'))")
        array = np.asarray(image, dtype=np.uint8)
    elif isinstance(image, np.ndarray):
        array = image
    elif image is None:
        raise InvalidArgumentError("an input image is required (a path, a PIL RGB image or an [H, W, 3] array)")
    else:
        raise InvalidArgumentError(f"image must be a path, a PIL RGB image or an [H, W, 3] array, "
                                   f"not {type(image).__name__}")
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise InvalidArgumentError(f"image array has shape {array.shape}, expected [H, W, 3] (RGB)")
    if array.dtype == np.uint8:
        pixels = array.astype(np.float32) / np.float32(255)
    elif np.issubdtype(array.dtype, np.floating):
        pixels = array.astype(np.float32)
        if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
            raise InvalidArgumentError("float image values must be finite and in [0, 1]")
    else:
        raise InvalidArgumentError(f"image array dtype {array.dtype} is not uint8 or float")
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def resize_lanczos(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """[3, H, W] in [0, 1] -> [3, height, width] with Pillow's Lanczos filter (per channel, float)."""
    if pixels.shape[1:] == (height, width):
        return pixels
    Image = _pil()
    channels = [np.asarray(Image.fromarray(channel).resize((width, height), Image.Resampling.LANCZOS))
                for channel in pixels.astype(np.float32)]
    return np.clip(np.stack(channels), 0.0, 1.0).astype(np.float32)


def vae_input(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The VAE encoder's image [1, 3, height, width] in [-1, 1] (before noise augmentation)."""
    resized = resize_lanczos(pixels, height, width)
    return (resized * np.float32(2) - np.float32(1))[None].astype(np.float32)


# --- diffusers' _resize_with_antialiasing (gaussian blur, then bicubic, align_corners=True) -----
def _gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float32) - size // 2
    if size % 2 == 0:
        x = x + 0.5
    kernel = np.exp(-(x ** 2) / (2 * np.float32(sigma) ** 2)).astype(np.float32)
    return kernel / kernel.sum()


def _blur_axis(x: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    pad = len(kernel) - 1
    widths = [(0, 0)] * x.ndim
    widths[axis] = (pad // 2, pad - pad // 2)
    padded = np.pad(x, widths, mode="reflect")
    out = np.zeros_like(x)
    length = x.shape[axis]
    for k, weight in enumerate(kernel):
        out += weight * np.take(padded, np.arange(k, k + length), axis=axis)
    return out


def _cubic_matrix(size_in: int, size_out: int, a: float = -0.75) -> np.ndarray:
    """[size_out, size_in] weights of torch's bicubic interpolation with align_corners=True."""
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    matrix = np.zeros((size_out, size_in), dtype=np.float64)
    for o in range(size_out):
        real = o * scale
        base = int(np.floor(real))
        t = real - base

        def near(d: float) -> float:
            return ((a + 2) * d - (a + 3)) * d * d + 1

        def far(d: float) -> float:
            return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

        weights = (far(t + 1), near(t), near(1 - t), far(2 - t))
        for k, weight in enumerate(weights):
            matrix[o, min(max(base - 1 + k, 0), size_in - 1)] += weight
    return matrix.astype(np.float32)


def resize_antialias(image: np.ndarray, size: int) -> np.ndarray:
    """diffusers' `_resize_with_antialiasing(image, (size, size))` for [B, C, H, W] float32."""
    h, w = image.shape[-2:]
    sigmas = (max((h / size - 1.0) / 2.0, 0.001), max((w / size - 1.0) / 2.0, 0.001))
    ks = [int(max(2.0 * 2 * sigmas[0], 3)), int(max(2.0 * 2 * sigmas[1], 3))]
    ks = [k + 1 if k % 2 == 0 else k for k in ks]
    blurred = _blur_axis(image.astype(np.float32), _gaussian_kernel(ks[1], sigmas[1]), axis=-1)
    blurred = _blur_axis(blurred, _gaussian_kernel(ks[0], sigmas[0]), axis=-2)
    rows, cols = _cubic_matrix(h, size), _cubic_matrix(w, size)
    # two matrix products (an unoptimised 3-operand einsum took ~5.7 s for 256 -> 224 px)
    return np.matmul(np.matmul(rows, blurred), cols.T).astype(np.float32)


def clip_input(pixels: np.ndarray, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """The image encoder's pixel_values [1, 3, size, size], normalised with mean and std."""
    image = pixels[None].astype(np.float32)
    if pixels.shape[1:] != (size, size):
        image = (resize_antialias(image * np.float32(2) - np.float32(1), size) + np.float32(1)) / np.float32(2)
    mean_array = np.asarray(mean, dtype=np.float32)[None, :, None, None]
    std_array = np.asarray(std, dtype=np.float32)[None, :, None, None]
    return ((image - mean_array) / std_array).astype(np.float32)


# --- output ------------------------------------------------------------------------------
def to_uint8(frames: np.ndarray) -> np.ndarray:
    """[F, H, W, 3] floats in [0, 1] -> uint8 (rounded, as diffusers' numpy_to_pil)."""
    return (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)


def save_video(frames: np.ndarray, gif: Path, fps: int) -> tuple[Path, list[Path]]:
    """Write `gif` (animated, looping, 1000/fps ms per frame) and PNG frames in `<stem>_frames/`.

    Files are written under temporary names and renamed into place. Returns (gif, pngs)."""
    import os
    import uuid

    Image = _pil()
    gif = Path(gif)
    if gif.suffix.lower() != ".gif":
        raise InvalidArgumentError(f"--out {gif} must end with .gif (PNG frames go beside it)")
    gif.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in to_uint8(frames)]
    folder = gif.parent / f"{gif.stem}_frames"
    folder.mkdir(exist_ok=True)
    pngs = []
    token = uuid.uuid4().hex[:8]
    for index, image in enumerate(images):
        path = folder / f"frame_{index:03d}.png"
        temporary = folder / f".{path.name}.tmp-{token}"
        image.save(temporary, format="PNG")
        os.replace(temporary, path)
        pngs.append(path)
    temporary = gif.parent / f".{gif.name}.tmp-{token}"
    images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(1, round(1000 / max(fps, 1))), loop=0)
    os.replace(temporary, gif)
    return gif, pngs
