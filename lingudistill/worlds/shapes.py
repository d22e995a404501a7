"""The visual task of every world: coloured shapes on white, "what colour is the circle ?" -> "the circle is red ."."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220), "yellow": (235, 210, 30)}
SHAPES = ("square", "circle", "triangle")
WORDS = (*"describe what colour is the in picture a on white background".split(), *COLOURS, *SHAPES)


def draw_shape(shape: str, colour: str, rng: random.Random, size: int) -> Image.Image:
    """One `shape` of `colour` at a random place and size on a white `size` x `size` image."""
    image = Image.new("RGB", (size, size), "white")
    side = rng.randint(size * 3 // 8, size * 5 // 8)
    x, y = rng.randint(1, size - side - 1), rng.randint(1, size - side - 1)
    box = (x, y, x + side, y + side)
    draw, fill = ImageDraw.Draw(image), COLOURS[colour]
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    else:
        draw.polygon([(x + side / 2, y), (x, y + side), (x + side, y + side)], fill=fill)
    return image


def _shapes(folder: Path, subdir: str, count: int, rng: random.Random, size: int) -> list[tuple[str, str, str]]:
    """`count` images of random coloured shapes saved under folder/subdir: (relative path, shape, colour)."""
    (folder / subdir).mkdir(parents=True, exist_ok=True)
    drawn = []
    for n in range(count):
        shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
        path = f"{subdir}/{n:04d}.png"
        draw_shape(shape, colour, rng, size).save(folder / path)
        drawn.append((path, shape, colour))
    return drawn


def text_records() -> list[dict[str, str]]:
    """Text-only sentences about shapes and colours, for a teacher's corpus: a language model knows these words,
    so aligning a vision tower to it can succeed, as it does for real LMs."""
    records = []
    for shape in SHAPES:
        for colour in COLOURS:
            records += [
                {"prompt": f"what colour is the {colour} {shape} ?", "response": f"the {shape} is {colour} ."},
                {"prompt": f"describe a {colour} {shape} .", "response": f"a {colour} {shape} on a white background ."},
            ]
    return records


def vqa_records(folder: Path, subdir: str, count: int, rng: random.Random, size: int) -> list[dict[str, Any]]:
    """The multimodal training data: half colour questions, half descriptions."""
    records = []
    for n, (path, shape, colour) in enumerate(_shapes(folder, subdir, count, rng, size)):
        if n % 2 == 0:
            prompt, response = f"what colour is the {shape} ?", f"the {shape} is {colour} ."
        else:
            prompt, response = "what is in the picture ?", f"a {colour} {shape} on a white background ."
        records.append({"prompt": prompt, "response": response, "images": [path]})
    return records


def vision_items(folder: Path, subdir: str, count: int, rng: random.Random, size: int) -> list[dict[str, Any]]:
    """The vision suite: four-way multiple choice on the shape's colour."""
    items = []
    for path, shape, colour in _shapes(folder, subdir, count, rng, size):
        items.append(
            {
                "question": f"what colour is the {shape} ?",
                "choices": [f"the {shape} is {c} ." for c in COLOURS],
                "answer": f"the {shape} is {colour} .",
                "image": path,
            }
        )
    return items
