"""Image-to-video runtime: one driver over video families (SVD first), numpy schedulers and
conditioning, streamed ONNX stages.

No torch, transformers or diffusers here (tests/test_video_svd.py runs it with them blocked).
`VideoPipeline(Manifest.load(pkg)).generate(image, num_frames=, steps=, seed=)` returns
float32 frames [F, H, W, 3] in [0, 1]; docs/VIDEO.md describes the package, the run and the
family contract (runtimes/video/family.py).
"""

from edgekit.runtimes.video.pipeline import VideoPipeline, VideoStats

__all__ = ["VideoPipeline", "VideoStats"]
