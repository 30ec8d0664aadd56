"""tools/inspect_data.py's sample grid (vla_jax/data/visualize.py): every action panel shows its chunk, a
one-step chunk included (one bar per action dimension; a line plot of one point draws nothing)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from data_fixtures import make_config, tabletop_dir  # noqa: F401  (session fixture)

from vla_jax.data import visualize


@pytest.mark.parametrize("horizon", [1, 4])
def test_every_action_panel_draws_its_chunk(tabletop_dir, tmp_path, monkeypatch, horizon):  # noqa: F811
    config = make_config(tabletop_dir)
    config.model.action_horizon = horizon
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure for inspection
    out = visualize.plot_samples(config, str(tmp_path / "samples.png"), count=4)
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    cameras = config.model.num_cameras
    action_axes = [ax for i, ax in enumerate(fig.axes) if i % (cameras + 1) == cameras and ax.axison]
    assert action_axes, "no action panel (no robot example among the first samples)"
    for ax in action_axes:
        steps, dims = (int(x) for x in ax.get_title().split()[1].split("x"))
        assert 1 <= steps <= horizon
        if steps == 1:
            assert len(ax.patches) == dims and not ax.lines
        else:
            assert len(ax.lines) == dims and all(len(line.get_xdata()) == steps for line in ax.lines)
