"""Kernel-free widgets: a frame per combination, self-contained HTML, light pages, clear errors."""

import base64
import io
import json
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sslbook import render, widgets

from .conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))  # the screenshot check is a script there

import screenshot_widgets

ANGLES = (0, 90, 180, 270)
NAMES = [f"{a}°" for a in ANGLES]


@pytest.fixture(scope="module")
def scenes() -> torch.Tensor:
    """16 rendered 32x32 scenes ``(16, 3, 32, 32)``: real-looking pictures, no data needed."""
    return render.render_random(16, seed=0).images


def rotation_widget(images: torch.Tensor, **kwargs) -> widgets.Explorer:
    """The rotation chapter's widget: every image at every angle, with made-up beliefs."""

    def frame(index: int, angle: int) -> list:
        k = ANGLES.index(angle)
        belief = torch.full((4,), 0.1).index_fill(0, torch.tensor([k]), 0.7)
        return [
            widgets.image(torch.rot90(images[index], k, (1, 2)), f"#{index}, turned {angle}°"),
            widgets.bars(NAMES, belief, "predicted angle", highlight=k),
        ]

    controls = {"test image": range(len(images)), "angle": ANGLES}
    return widgets.explorer(widgets.precompute(frame, controls), controls, **kwargs)


def page_data(snippet: str) -> dict:
    """The data object the snippet's script draws from."""
    return json.loads(re.search(r"D = (\{.*?\}), PNG = ", snippet).group(1).replace("<\\/", "</"))


def static_frame(snippet: str) -> str:
    return snippet.split('<div class="sbw-frame">', 1)[1].split("<script>", 1)[0]


def test_one_frame_per_combination_and_the_first_one_shown(scenes):
    widget = rotation_widget(scenes[:3], initial={"test image": 2, "angle": 180})
    snippet = widget._repr_html_()
    data = page_data(snippet)
    assert widget.n_frames == len(data["frames"]) == 3 * 4
    assert data["sizes"] == [3, 4] and data["state"] == [2, 2]
    # row-major, the last control fastest: frame 2 * 4 + 2 is image 2 at 180°
    assert data["frames"][2 * 4 + 2][0]["caption"] == "#2, turned 180°"
    assert "#2, turned 180°" in static_frame(snippet)
    assert "#0, turned 0°" not in static_frame(snippet)


def test_controls_are_a_slider_or_buttons_and_the_script_wires_both(scenes):
    snippet = rotation_widget(scenes[:8])._repr_html_()
    assert re.search(
        r'<input type="range" min="0" max="7" step="1" value="0" data-control="0"', snippet
    )
    buttons = re.findall(r'<button type="button" data-control="1" data-option="(\d)"', snippet)
    assert buttons == ["0", "1", "2", "3"] and ">270</button>" in snippet
    script = snippet.split("<script>", 1)[1]
    assert 'querySelectorAll("input[data-control]")' in script
    assert 'querySelectorAll("button[data-control]")' in script
    assert page_data(snippet)["labels"] == [[str(i) for i in range(8)], ["0", "90", "180", "270"]]


def test_snippet_is_self_contained(scenes):
    snippet = rotation_widget(scenes[:4], title="Which way is up?")._repr_html_()
    code = re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", snippet)  # base64 holds "//" too
    code = re.sub(r'"[A-Za-z0-9+/=]{200,}"', '""', code)
    assert not re.search(r"https?:|//\w|<link|@import|url\(|fetch|XMLHttpRequest|import\(", code)
    assert "<script src" not in snippet and snippet.count("</script>") == 1
    assert re.findall(r'src="(.{0,22})', static_frame(snippet)) == ["data:image/png;base64,"]
    assert "src=\"' + PNG +" in snippet and 'PNG = "data:image/png;base64,"' in snippet
    assert snippet.startswith('<div class="sbw" id="sslbook-widget-')


def test_every_display_has_its_own_element_id(scenes):
    widget = rotation_widget(scenes[:2])
    ids = [re.search(r'id="([^"]+)"', widget._repr_html_()).group(1) for _ in range(2)]
    assert ids[0] != ids[1]


def test_quarter_turns_and_repeats_are_stored_once(scenes):
    widget = rotation_widget(scenes)
    assert widget.n_images == 16  # not 64: a turned image is the stored one, turned by CSS
    frames = page_data(widget._repr_html_())["frames"]
    turned = frames[3 * 4 + 1][0]  # image 3 at 90° (counter-clockwise)
    assert (turned["image"], turned["turn"]) == (frames[3 * 4][0]["image"], 1)
    assert "turn" not in frames[3 * 4][0]  # default values are left out of the data
    shown = widgets.explorer({0: widgets.image(torch.rot90(scenes[3], 1, (1, 2)))}, {"c": [0]})
    assert "rotate" not in static_frame(shown._repr_html_())  # stored as is when it comes first


def test_sizes_of_a_realistic_rotation_widget(scenes):
    widget = rotation_widget(scenes)
    snippet = widget._repr_html_()
    images = re.findall(r"base64,([A-Za-z0-9+/=]+)|\"([A-Za-z0-9+/=]{200,})\"", snippet)
    images = [a or b for a, b in images]
    assert len(images) == 16  # the first frame's in its <img>, the others in the data: once each
    png = [base64.b64decode(s) for s in images]
    assert all(Image.open(io.BytesIO(p)).size == (32, 32) for p in png)  # sent small...
    assert 'width="128" height="128"' in snippet and "image-rendering:pixelated" in snippet
    assert widget.nbytes == len(snippet.encode())
    pictures = sum(len(s) for s in images)
    assert 16 * 1000 < pictures < 16 * 4200  # a 32x32 PNG, base64: a few kB
    assert widget.nbytes - pictures < 25_000  # the 64 frames' numbers, CSS and script
    assert widget.nbytes < 90_000


def test_grey_images_are_sent_with_one_channel(scenes):
    grey = scenes[0].mean(0, keepdim=True).expand(3, -1, -1)
    snippet = widgets.explorer({0: widgets.image(grey)}, {"c": [0]})._repr_html_()
    png = base64.b64decode(re.search(r"base64,([A-Za-z0-9+/=]+)", snippet).group(1))
    assert Image.open(io.BytesIO(png)).mode == "L"


def test_one_control_takes_bare_keys_and_labelled_options():
    options = {"cat": 3, "dog": 5}
    frames = {3: widgets.text("a cat"), 5: [widgets.text("a dog")]}
    snippet = widgets.explorer(frames, {"class": options}, initial={"class": 5})._repr_html_()
    assert ">cat</button>" in snippet and "a dog" in static_frame(snippet)
    pairs = {((3, 9),): widgets.text("b=3, d=9"), ((2, 7),): widgets.text("b=2, d=7")}
    widgets.explorer(pairs, {"b, d": [(3, 9), (2, 7)]})  # tuple options, keyed as precompute does
    bare = dict(zip([(3, 9), (2, 7)], pairs.values(), strict=True))
    widgets.explorer(bare, {"b, d": [(3, 9), (2, 7)]})  # or by the bare option


def test_bars_show_formatted_values_scaled_to_the_axis():
    chart = widgets.bars(["a", "b", "c"], torch.tensor([0.5, 0.25, 0.0]), highlight=[0, 2])
    assert chart.texts == ("50%", "25%", "0%") and chart.highlight == (0, 2)
    snippet = widgets.explorer({0: chart}, {"c": [0]})._repr_html_()
    half = round(0.5 * widgets.BAR_HEIGHT)
    assert f'<span class="sbw-bar sbw-hl" style="height:{half}px">' in snippet
    relative = widgets.bars(["a", "b"], [2.0, 1.0], vmax=None, fmt=".1f", horizontal=True)
    assert relative.fractions == (1.0, 0.5) and relative.texts == ("2.0", "1.0")
    assert widgets.bars(["a", "b"], [0.1, 0.9], highlight=torch.tensor(1)).highlight == (1,)


def test_text_is_escaped_in_the_markup_and_in_the_script():
    nasty = '</script><img src=x onerror="alert(1)">'
    snippet = widgets.explorer({0: widgets.image(torch.zeros(3, 4, 4), nasty)}, {"c": [0]})
    html = snippet._repr_html_()
    assert html.count("</script>") == 1 and "<\\/script><img src=x" in html  # a JS string
    assert "<img src=x" not in static_frame(html) and "&lt;/script&gt;" in static_frame(html)


def test_a_missing_combination_is_named():
    frames = {(i, a): widgets.text(f"{i} {a}") for i in range(2) for a in ANGLES}
    del frames[(1, 90)]
    with pytest.raises(ValueError, match=r"lacks 1 of the 8 combinations of \(test image, angle\)"):
        widgets.explorer(frames, {"test image": range(2), "angle": ANGLES})
    with pytest.raises(ValueError, match=r"\(1, 90\)"):
        widgets.explorer(frames, {"test image": range(2), "angle": ANGLES})


def test_other_bad_input_is_refused_with_a_reason():
    frames = {0: widgets.text("zero"), 1: widgets.text("one")}
    with pytest.raises(ValueError, match="match no combination"):
        widgets.explorer({**frames, 2: widgets.text("two")}, {"c": [0, 1]})
    with pytest.raises(ValueError, match="not one of its options"):
        widgets.explorer(frames, {"c": [0, 1]}, initial={"c": 7})
    with pytest.raises(ValueError, match="not a control"):
        widgets.explorer(frames, {"c": [0, 1]}, initial={"d": 0})
    with pytest.raises(ValueError, match="at least one control"):
        widgets.explorer(frames, {})
    with pytest.raises(ValueError, match="repeats an option"):
        widgets.explorer(frames, {"c": [0, 1, 1]})
    with pytest.raises(ValueError, match="is empty"):
        widgets.explorer({0: [], 1: frames[1]}, {"c": [0, 1]})
    with pytest.raises(TypeError, match="not <class 'str'>"):
        widgets.explorer({0: ["a picture"], 1: frames[1]}, {"c": [0, 1]})
    with pytest.raises(ValueError, match="C 1 or 3"):
        widgets.image(torch.zeros(4, 8, 8))
    with pytest.raises(ValueError, match="3 labels but 2 values"):
        widgets.bars(["a", "b", "c"], [0.5, 0.5])
    with pytest.raises(ValueError, match="outside the 2 bars"):
        widgets.bars(["a", "b"], [0.5, 0.5], highlight=2)


def test_a_widget_over_its_byte_budget_is_refused(scenes):
    with pytest.raises(ValueError, match=r"weighs [\d,]+ bytes, over max_bytes=10,000"):
        rotation_widget(scenes, max_bytes=10_000)
    assert rotation_widget(scenes[:2], max_bytes=None).nbytes > 0


@pytest.mark.skipif(screenshot_widgets.chromium() is None, reason="no chromium on the PATH")
def test_the_built_page_swaps_frames_and_turns_images_counter_clockwise(tmp_path):
    """In headless Chromium: the controls change the frame, the script redraws the shipped
    first frame exactly, and a shared quarter turn shows as the turned image."""
    marked = torch.zeros(3, 8, 8)
    marked[2] = 1.0  # blue, with a red top-left pixel
    marked[:, 0, 0] = torch.tensor([1.0, 0.0, 0.0])
    frames = {k: widgets.image(torch.rot90(marked, k, (1, 2)), scale=8) for k in (0, 1)}
    widget = widgets.explorer(frames, {"quarter turns": [0, 1]})
    page = tmp_path / "page.html"
    page.write_text(f"<!doctype html><meta charset=utf-8><body>{widget._repr_html_()}</body>")
    (row,) = screenshot_widgets.check_page(page, tmp_path / "shots")
    assert row["changed"] and row["redraw_matches"] and row["bytes"] == widget.nbytes
    red_at = [_red_corner(Image.open(row[shot]).convert("RGB")) for shot in ("before", "after")]
    assert red_at == [("top", "left"), ("bottom", "left")]  # np/torch rot90 = counter-clockwise


def _red_corner(shot: Image.Image) -> tuple[str, str]:
    """Which corner of the blue and red picture in ``shot`` the red pixel is in."""
    rgb = torch.from_numpy(np.asarray(shot).astype(np.int64))  # (H, W, 3)
    red = (rgb[..., 0] > 240) & (rgb[..., 1] < 15) & (rgb[..., 2] < 15)
    picture = red | ((rgb[..., 2] > 240) & (rgb[..., :2] < 15).all(-1))
    ys, xs = picture.nonzero().T
    ry, rx = red.nonzero().float().mean(0)
    vertical = "top" if ry < (ys.min() + ys.max()) / 2 else "bottom"
    return vertical, ("left" if rx < (xs.min() + xs.max()) / 2 else "right")
