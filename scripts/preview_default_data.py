"""Render a preview strip of the default data set (docs/default_data.png).

Each tile is a training picture (upscaled 2.5x) with its spoken question's transcript, its
label and its caption underneath.

    python scripts/preview_default_data.py [--root DIR] [--count 6] [--out docs/default_data.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image, ImageDraw

from mmctx.data.builtin.scenes import default_data_root, ensure_default_dataset

SCALE = 2.5
TEXT_HEIGHT = 48


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("docs/default_data.png"))
    args = parser.parse_args()
    root = ensure_default_dataset(args.root or default_data_root())
    rows = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()[: args.count]]
    tiles = []
    for row in rows:
        picture = Image.open(root / row["image"]).convert("RGB")
        side = round(picture.width * SCALE)
        picture = picture.resize((side, side), Image.Resampling.NEAREST)
        tile = Image.new("RGB", (side, side + TEXT_HEIGHT), "white")
        tile.paste(picture, (0, 0))
        draw = ImageDraw.Draw(tile)
        lines = [f'"{row["text"]}"', f"label: {row['label']}", row["caption"]]
        for i, line in enumerate(lines):
            draw.text((2, side + 2 + 15 * i), line, fill=(0, 0, 0) if i < 2 else (90, 90, 90))
        tiles.append(tile)
    gap = 8
    strip = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + gap
    args.out.parent.mkdir(parents=True, exist_ok=True)
    strip.save(args.out)
    print(f"wrote {args.out} ({len(tiles)} samples from {root})")


if __name__ == "__main__":
    main()
