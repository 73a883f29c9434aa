"""The tray icon's pictures, drawn with Pillow: a coloured disc with a white "i"."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

RUNNING = "running"
ERROR = "error"
STOPPED = "stopped"

COLOURS: dict[str, tuple[int, int, int]] = {
    RUNNING: (46, 160, 67),  # green
    ERROR: (207, 34, 46),  # red
    STOPPED: (128, 128, 128),  # grey
}
WHITE = (255, 255, 255, 255)


def icon_image(status: str, size: int = 64) -> Image:
    """A `size`-pixel square, transparent outside the disc."""
    from PIL import Image, ImageDraw  # the optional [tray] extra

    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    margin = max(1, size // 16)
    draw.ellipse((margin, margin, size - 1 - margin, size - 1 - margin),
                 fill=(*COLOURS[status], 255))
    # The "i": a dot above a stem, centred, thick enough to read at 16 px.
    stem = max(2, size // 8)
    left = (size - stem) // 2
    draw.ellipse((left, size * 0.22, left + stem - 1, size * 0.22 + stem - 1), fill=WHITE)
    draw.rectangle((left, size * 0.40, left + stem - 1, size * 0.76), fill=WHITE)
    return image
