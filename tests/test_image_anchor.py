"""ctc/image_codec.py: the colour conversion and 4:2:0 planes without a codec, and a round trip
through x265 / libde265-dec265 (skipped when they are not on PATH)."""

import shutil

import numpy as np
import pytest

from ctc.image_codec import code_image, from_planes_420, psnr, rgb_to_ycbcr, to_planes_420, ycbcr_to_rgb


def photo_like(height=75, width=101, seed=0):
    """A smooth colourful test image with an edge (odd sizes on purpose)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([128 + 100 * np.sin(x / 9.0), 128 + 90 * np.cos(y / 7.0), 60 + 0.8 * (x + y)], axis=-1)
    rgb[height // 3:, width // 2:] *= 0.4
    return np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)


def test_bt601_full_range_conversion():
    white, red = np.array([[[255, 255, 255]]], np.uint8), np.array([[[255, 0, 0]]], np.uint8)
    assert np.allclose(rgb_to_ycbcr(white), [[[255, 128, 128]]])
    assert np.allclose(rgb_to_ycbcr(red), [[[76.245, 84.972, 255.5]]], atol=1e-3)
    image = photo_like()
    assert np.array_equal(ycbcr_to_rgb(rgb_to_ycbcr(image)), image)


def test_planes_420_without_a_codec():
    image = photo_like()
    planes = to_planes_420(image)
    assert [p.shape for p in planes] == [(80, 104), (40, 52), (40, 52)] and all(p.dtype == np.uint8 for p in planes)
    back = from_planes_420(planes, *image.shape[:2])
    assert back.shape == image.shape and psnr(back, image) > 30     # only chroma subsampling and rounding
    assert [p.shape for p in to_planes_420(photo_like(20, 30))] == [(64, 64), (32, 32), (32, 32)]


@pytest.mark.skipif(shutil.which("x265") is None or shutil.which("libde265-dec265") is None,
                    reason="needs x265 and libde265-dec265 on PATH")
def test_round_trip_through_hevc():
    image = photo_like()
    fine, coarse = code_image(image, 22), code_image(image, 42)
    assert fine.decoded.shape == image.shape and fine.decoded.dtype == np.uint8
    assert psnr(fine.decoded, image) > psnr(coarse.decoded, image) > 20
    assert fine.bits > coarse.bits > 0 and fine.bpp == fine.bits / (75 * 101)
    assert fine.encoder_info.startswith("x265 ")
