"""Interactive figures that also render when a notebook runs headless.

`slider_figure` shows the sliders, then the figure as an ordinary output (so it is saved
in the notebook, shown on GitHub and compared by nbval). Moving a slider redraws the figure
in place through its display handle; no kernel-side Output widget is involved.
"""

from __future__ import annotations

from typing import Callable

import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display


def slider_figure(draw: Callable[..., "plt.Figure"], **controls: widgets.ValueWidget) -> None:
    """Show ``controls`` and the figure ``draw(**values)``; redraw whenever a control changes.

    Example::

        slider_figure(lambda k: plot_values(history[k]), k=widgets.IntSlider(0, 0, 10))
    """
    box = widgets.VBox(list(controls.values()))
    display(box)

    def render():
        fig = draw(**{name: w.value for name, w in controls.items()})
        plt.close(fig)  # keep the inline backend from showing it a second time
        return fig

    handle = display(render(), display_id=True)

    def on_change(_change):
        handle.update(render())

    for w in controls.values():
        w.observe(on_change, names="value")

