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

import os
import re
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import InvalidArgumentError, OutputPathError


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


FRAME_NAME = re.compile(r"frame_(\d{3,})\.png")


def smooth_test_image(height: int, width: int) -> np.ndarray:
    """A smooth RGB test image [H, W, 3] in [0.1, 0.9] (sines across rows and columns), for runs
    that need an input image but were given none (video calibration, the video bench)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([0.5 + 0.4 * np.sin(x / 17 + k) * np.cos(y / 23 - k) for k in range(3)], axis=-1)


def frame_name(index: int) -> str:
    return f"frame_{index:03d}.png"


def check_video_output(gif: Path | str) -> tuple[Path, Path]:
    """(gif, frames folder) once both can be written; run it before generating.

    Refused in one line (OutputPathError): a name not ending in .gif, a GIF path that is a
    folder, a frames folder (`<stem>_frames/` beside the GIF) that is a file, a path too long, a
    folder that is a file or not writable. Missing folders are created by `save_video`."""
    from edgekit.output_paths import check_output_path, shown

    gif = Path(gif)
    if gif.suffix.lower() != ".gif":
        raise InvalidArgumentError(f"--out {shown(gif)} must end with .gif (PNG frames go to {gif.stem}_frames/)")
    folder = gif.parent / f"{gif.stem}_frames"
    gif = check_output_path(gif, "--out", suffix_bytes=len(".") + len(".tmp-") + 8)  # its temporary's name
    folder = check_output_path(folder, "frames folder")
    if gif.is_dir():
        raise OutputPathError(f"--out {shown(gif)} is a folder; pass the path of a .gif file to write")
    if gif.exists() and not gif.is_file():
        raise OutputPathError(f"--out {shown(gif)} exists and is not a regular file; choose another --out")
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"the frames folder {shown(folder)} is a file; move it or choose another --out")
    if folder.is_dir():
        check_output_path(folder / frame_name(0), "frames folder")  # writable inside
    return gif, folder


def save_video(frames: np.ndarray, gif: Path, fps: int) -> tuple[Path, list[Path]]:
    """Write `gif` (animated, looping, 1000/fps ms per frame) and PNG frames in `<stem>_frames/`.

    Paths are checked first (`check_video_output`). Files are written under temporary names and
    renamed into place; on any failure the temporaries are removed. The frames folder ends up
    holding exactly this video's `frame_NNN.png`: frames of that naming left by a longer earlier
    video are removed. Any other file in the folder is the user's and is left alone. Returns
    (gif, pngs)."""
    Image = _pil()
    gif, folder = check_video_output(gif)
    images = [Image.fromarray(frame) for frame in to_uint8(frames)]
    token = uuid.uuid4().hex[:8]
    temporaries: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        pngs = []
        for index, image in enumerate(images):
            path = folder / frame_name(index)
            temporaries.append(folder / f".{path.name}.tmp-{token}")
            image.save(temporaries[-1], format="PNG")
            pngs.append(path)
        temporaries.append(gif.parent / f".{gif.name}.tmp-{token}")
        images[0].save(temporaries[-1], format="GIF", save_all=True, append_images=images[1:],
                       duration=max(1, round(1000 / max(fps, 1))), loop=0)
        for temporary, path in zip(temporaries, [*pngs, gif]):
            os.replace(temporary, path)
        _remove_stale_frames(folder, len(pngs))
    except OSError as error:
        raise OutputPathError(f"could not write the video to {gif} ({error.strerror or error}); "
                              "check the folder and free space") from None
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)
    return gif, pngs


def _remove_stale_frames(folder: Path, count: int) -> None:
    """Remove `frame_NNN.png` files numbered `count` or more (a longer earlier video's); nothing else."""
    for entry in os.scandir(folder):
        match = FRAME_NAME.fullmatch(entry.name)
        if match and int(match.group(1)) >= count and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
