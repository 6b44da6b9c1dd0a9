#!/usr/bin/env python3
"""Makes the guide images of experiments/spatial.toml from the Tübingen photograph: the sky
(`experiments/masks/tubingen_sky.png`) and everything else (`tubingen_ground.png`).

The rule, no hand painting: a pixel is sky-like when it is blue (B > R + 25 and B ≥ G) and not
dark (B > 110); the sky is the sky-like pixels connected to the top row (a flood fill, so the
blue of the river's reflection stays ground); its edge is softened by a 5-pixel box blur, so the
guides are soft masks that add up to 1 everywhere.

    python3 -m venv /tmp/masks && /tmp/masks/bin/pip install numpy pillow
    /tmp/masks/bin/python scripts/make_masks.py [path/to/tubingen.jpg]

Without an argument the photograph is read from ../shared/images (or $NST_IMAGE_MIRROR).
"""
import hashlib
import os
import sys
from collections import deque

import numpy as np
from PIL import Image

SHA256 = "e67d1869f01fd805385c681a80d9ebcf0f70ea4a5fe6127f0606bb1c7f4bf506"
SIZE = (256, 192)  # the guides are resized to each run's output; this is plenty


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    mirror = os.environ.get("NST_IMAGE_MIRROR", os.path.join(here, "..", "..", "shared", "images"))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(mirror, "content", "tubingen.jpg")
    data = open(path, "rb").read()
    if hashlib.sha256(data).hexdigest() != SHA256:
        sys.exit(f"{path} is not the manifest's tubingen.jpg (sha256 {SHA256})")
    rgb = np.asarray(Image.open(path).convert("RGB").resize(SIZE, Image.BILINEAR), dtype=np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    like = (b > r + 25) & (b >= g) & (b > 110)
    h, w = like.shape
    sky = np.zeros_like(like)
    queue = deque((0, x) for x in range(w) if like[0, x])
    for y, x in queue:
        sky[y, x] = True
    while queue:
        y, x = queue.popleft()
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ny, nx = y + dy, x + dx
            if 0 <= ny < h and 0 <= nx < w and like[ny, nx] and not sky[ny, nx]:
                sky[ny, nx] = True
                queue.append((ny, nx))
    soft = sky.astype(np.float64)
    k = 5
    padded = np.pad(soft, k // 2, mode="edge")
    soft = sum(padded[dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k)) / (k * k)
    out = os.path.join(here, "..", "experiments", "masks")
    os.makedirs(out, exist_ok=True)
    sky8 = np.round(soft * 255).astype(np.uint8)
    Image.fromarray(sky8, "L").save(os.path.join(out, "tubingen_sky.png"), optimize=True)
    Image.fromarray(255 - sky8, "L").save(os.path.join(out, "tubingen_ground.png"), optimize=True)
    print(f"sky: {sky.mean():.1%} of the photograph")


if __name__ == "__main__":
    main()
