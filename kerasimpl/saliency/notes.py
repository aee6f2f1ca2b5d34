"""Notes on explained test images: captions, shortfalls, titles, Markdown per image.

What a reader needs to comment on a classifier's right and wrong answers:
the true class, the prediction and its probability (and, when wrong, the
second choice), and where each saliency map puts its importance, read from
the map itself (`mass_shares`).
"""

from __future__ import annotations

import numpy as np

from kerasimpl.reporting import markdown_grid
from kerasimpl.saliency.selection import right_wrong_shortfall


def caption(index, names, label, probs) -> str:
    """'#i RIGHT/WRONG', true class, prediction with its probability; for a
    wrong one the true class's probability and the second choice."""
    first, second = (int(c) for c in np.argsort(-probs)[:2])
    if first == label:
        return f"#{index} RIGHT  true: {names[label]}\npred: {names[first]} ({probs[first]:.2f})"
    return (f"#{index} WRONG  true: {names[label]} ({probs[label]:.2f})\npred: {names[first]} ({probs[first]:.2f})"
            f"\n2nd: {names[second]} ({probs[second]:.2f})")


def shortfall(probs, labels, chosen, n) -> str:
    """A sentence when the chosen images hold fewer than n // 2 misclassified
    or n - n // 2 correct ones (the candidates had no more), else ''
    (`selection.right_wrong_shortfall` on the probabilities' top-1)."""
    return right_wrong_shortfall(np.asarray(probs).argmax(1), labels, chosen, n)


def method_title(method) -> str:
    """A method's label in galleries, overlays and notes: its name, with the
    occlusion window or the explained layer where it has one."""
    o = method.options()
    if method.name == "occlusion":
        return f"occlusion ({o['patch']}px, stride {o['stride']})"
    if "layer" in o:
        return f"{method.name} ({o['layer']})"
    return method.name


def image_note(entry, source) -> str:
    """A short Markdown note on one explained image: the prediction, and
    where each map puts its importance (`entry["mass"]`: method ->
    `mass_shares` of its map), for a reader writing comments on it."""
    verdict = "RIGHT" if entry["correct"] else "WRONG"
    lines = [f"# Test image {entry['index']} of {source}: {verdict}", "",
             f"- true class: {entry['label']}",
             f"- predicted: {entry['predicted']} (p = {entry['probability']:.3f}); second choice: "
             f"{entry['second']} (p = {entry['second_probability']:.3f})", "",
             "Where each map puts its importance (shares of the map's total; an evenly spread map has "
             "share = area):", "",
             ]
    lines += markdown_grid(["method", "central box share", "border ring share", "peak (row, col)", "reading"],
                           [[name, f"{m['central_share']:.0%} (area {m['central_area']:.0%})",
                             f"{m['border_share']:.0%} (area {m['border_area']:.0%})",
                             f"({m['peak'][0]:.2f}, {m['peak'][1]:.2f})", reading(m)]
                            for name, m in entry["mass"].items()])
    lines += ["", "Central box: the middle half of the rows and of the columns; border ring: the outer eighth of "
              "each side; peak: the map's maximum, as fractions of the height and width."]
    return "\n".join(lines) + "\n"


def reading(m) -> str:
    """A plain reading of `mass_shares`: centred, on the border, or spread."""
    if m["central_share"] >= 1.5 * m["central_area"]:
        return "concentrated in the centre (where the object usually is)"
    if m["border_share"] >= 1.5 * m["border_area"]:
        return "mostly on the border (background?)"
    return "spread over the image"


def mass_shares(importance, centre=0.5, border=0.125) -> dict:
    """Where a map puts its mass: shares of the total importance in the
    central box and in the border ring, beside those regions' shares of the
    area (a map spread evenly has share == area).

    Args:
        importance: (H, W) map, high = important, >= 0.
        centre: side of the central box, a fraction of each side (0.5: the
            middle half of the rows and of the columns, a quarter of the area).
        border: width of the border ring, a fraction of each side.

    Returns:
        dict with `central_share`, `central_area`, `border_share`,
        `border_area` (fractions in [0, 1]) and `peak` ((row, column) of the
        maximum, as fractions of the height and width).
    """
    m = np.asarray(importance, np.float64)
    if m.ndim != 2 or m.min() < 0:
        raise ValueError(f"importance must be a non-negative (H, W) map. Received: shape {m.shape}, min {m.min()}")
    h, w = m.shape
    central = np.zeros((h, w), bool)
    r0, c0 = round(h * (1 - centre) / 2), round(w * (1 - centre) / 2)
    central[r0:h - r0, c0:w - c0] = True
    ring = np.ones((h, w), bool)
    bh, bw = round(h * border), round(w * border)
    ring[bh:h - bh, bw:w - bw] = False
    total = m.sum()
    share = (lambda region: float(m[region].sum() / total)) if total > 0 else (lambda region: 0.0)
    i, j = np.unravel_index(int(np.argmax(m)), m.shape)
    return {"central_share": share(central), "central_area": float(central.mean()),
            "border_share": share(ring), "border_area": float(ring.mean()),
            "peak": [float((i + 0.5) / h), float((j + 0.5) / w)]}
