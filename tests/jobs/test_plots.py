"""The job's pictures render headless, in-process, as PNGs of the size the report page lays out."""

from __future__ import annotations

import io

from PIL import Image

from jobs.plots import confusion_matrix_png, lr_sweep_png, training_curves_png


def _image(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return image


def test_each_plot_is_a_png_of_its_figure_size() -> None:
    lrs = [10 ** (-7 + i * 0.1) for i in range(70)]
    losses = [1.0 - 0.005 * i for i in range(60)] + [0.7 + 0.2 * i for i in range(10)]
    sweep = _image(lr_sweep_png(lrs, losses, {"valley": 1e-3, "steep": 3e-3}, 1e-3))
    epochs = [
        {"epoch": e, "stage": stage, "train_loss": 1 / e, "valid_loss": 1.2 / e, "accuracy": 0.8 + e / 100}
        for e, stage in ((1, "frozen"), (2, "unfrozen"), (3, "unfrozen"))
    ]
    curves = _image(training_curves_png(epochs))
    matrix = _image(confusion_matrix_png([[48, 2], [1, 49]], ["cat", "dog"]))
    # bbox_inches="tight" trims the margins: about 6x4, 10x4 and 4x4 inches at 110 dpi.
    assert 500 < sweep.width < 700 and 350 < sweep.height < 480, sweep.size
    assert curves.width > 2 * curves.height, curves.size
    assert 0.7 < matrix.width / matrix.height < 1.4, matrix.size
