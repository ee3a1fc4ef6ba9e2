"""Widgets that work without a kernel: precomputed frames, swapped by a few lines of JavaScript.

An ``ipywidgets.interact`` needs a running Python kernel, so on the published book (static HTML)
it is a still picture. :func:`explorer` turns what such a widget would show, computed beforehand
for every combination of its controls, into one self-contained HTML snippet: small PNG images
(shown enlarged, pixel for pixel), bar charts as numbers, sliders and buttons, and a few lines of
vanilla JavaScript that swap the frame. No CDN, no file beside the page: the book builds offline,
and the same object displays in Jupyter, Colab and VS Code.

A frame is a list of panels: :func:`image`, :func:`bars` and :func:`text`. A notebook draws one
frame per control combination with a function, as it would for ``interact``::

    controls = {"test image": range(16), "angle": rotation.ANGLES}
    frames = sb.widgets.precompute(frame_of, controls)  # frame_of(index, angle) -> panels
    sb.widgets.explorer(frames, controls, title="Which way is up?")

Images are stored once each: repeats, and quarter turns of an image already stored (shown
turned by CSS), cost nothing more. A widget over 16 CIFAR images at 4 angles with its bar charts
weighs about 68 kB (38 kB gzip-compressed, as a web server sends it): a 32x32 colour image costs
about 2.9 kB, a grey one 1 kB, a frame's numbers a few hundred bytes, the script and style 4.9 kB.
:attr:`Explorer.nbytes` says exactly, and :func:`explorer` refuses a snippet over ``max_bytes``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: Colours of the bars: the matplotlib default, and the notebooks' highlight.
BAR_COLOR, HIGHLIGHT_COLOR = "#1f77b4", "green"
#: Height in CSS pixels of a vertical bar chart's bars (at value ``vmax``).
BAR_HEIGHT = 96
#: Width in CSS pixels of a horizontal bar chart's bars (at value ``vmax``).
BAR_WIDTH = 160
#: A page's snippets above this size are refused unless ``max_bytes`` says otherwise.
MAX_BYTES = 1_000_000

_CSS = (
    """
.sbw{font-size:13px;line-height:1.3;margin:.5em 0}
.sbw-title{font-weight:600;margin-bottom:.3em}
.sbw-controls{display:flex;flex-wrap:wrap;gap:.4em 1.5em;align-items:center;margin-bottom:.6em}
.sbw-control{display:inline-flex;gap:.4em;align-items:center;margin:0}
.sbw-control output{min-width:3em}
.sbw button{border:1px solid #888;background:none;color:inherit;padding:1px 8px;border-radius:3px;
cursor:pointer;font:inherit}
.sbw button[aria-pressed=true]{background:#1f77b4;border-color:#1f77b4;color:#fff}
.sbw-frame{display:flex;flex-wrap:wrap;gap:10px 14px;align-items:flex-end}
.sbw-panel{display:flex;flex-direction:column;align-items:center}
.sbw-panel img{image-rendering:crisp-edges;image-rendering:pixelated;max-width:none}
.sbw-caption{font-size:12px;text-align:center;white-space:pre-line;margin-top:2px}
.sbw-text{flex-basis:100%}
.sbw-vbars{display:flex;align-items:flex-end;gap:4px}
.sbw-vbars>div{display:flex;flex-direction:column;align-items:center;font-size:11px;min-width:26px}
.sbw-hbars>div{display:flex;align-items:center;gap:4px;font-size:11px;height:17px}
.sbw-hbars>div>span:first-child{min-width:3.5em;text-align:right}
.sbw-track{display:flex;background:rgba(128,128,128,.15)}
.sbw-vbars .sbw-track{align-items:flex-end}.sbw-vbars .sbw-bar{width:22px;min-height:1px}
.sbw-hbars .sbw-bar{height:12px;min-width:1px}
"""
    + f".sbw-vbars .sbw-track{{height:{BAR_HEIGHT}px}}.sbw-hbars .sbw-track{{width:{BAR_WIDTH}px}}"
    + f".sbw-bar{{background:{BAR_COLOR}}}.sbw-hl{{background:{HIGHLIGHT_COLOR}}}"
)

# Draws a frame from its data with the same markup as _panel_html, and wires the controls. The
# data: {images: [base64 PNG], frames: [[panel as _panel_data makes it]], sizes: [options per
# control], labels: [[option label]], state: [chosen option per control, initially]}; frames are
# row-major over the controls (the last control varies fastest).
_JS = """
(function () {
  var ID = __ID__, D = __DATA__, PNG = "data:image/png;base64,";
  function esc(s) {
    return String(s).replace(/[&<>"]/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c];
    });
  }
  function caption(p) {
    return p.caption ? '<div class="sbw-caption">' + esc(p.caption) + "</div>" : "";
  }
  function bar(p, i) {
    var size = (p.horizontal ? "width:" : "height:") + p.px[i] + "px";
    var hl = (p.highlight || []).indexOf(i) >= 0 ? " sbw-hl" : "";
    var b = '<span class="sbw-track"><span class="sbw-bar' + hl + '" style="' + size +
      '"></span></span>';
    var label = "<span>" + esc(p.labels[i]) + "</span>";
    var value = "<span>" + esc(p.texts[i]) + "</span>";
    return "<div>" + (p.horizontal ? label + b + value : value + b + label) + "</div>";
  }
  function panel(p) {
    if (p.kind === "text") return '<div class="sbw-text">' + esc(p.text || "") + "</div>";
    if (p.kind === "image") {
      var turn = p.turn ? ' style="transform:rotate(' + -90 * p.turn + 'deg)"' : "";
      return '<div class="sbw-panel"><img data-image="' + p.image + '" src="' + PNG +
        D.images[p.image] + '" width="' + p.width + '" height="' + p.height + '" alt="' +
        esc(p.caption || "") + '"' + turn + ">" + caption(p) + "</div>";
    }
    var bars = p.labels.map(function (_, i) { return bar(p, i); }).join("");
    return '<div class="sbw-panel"><div class="sbw-' + (p.horizontal ? "h" : "v") + 'bars">' +
      bars + "</div>" + caption(p) + "</div>";
  }
  function mount(root) {
    var state = D.state.slice(), frame = root.querySelector(".sbw-frame");
    frame.querySelectorAll("img[data-image]").forEach(function (img) {  // sent once, here
      D.images[+img.dataset.image] = img.getAttribute("src").slice(PNG.length);
    });
    function draw() {
      var k = 0;
      for (var c = 0; c < D.sizes.length; c++) k = k * D.sizes[c] + state[c];
      frame.innerHTML = D.frames[k].map(panel).join("");
    }
    root.querySelectorAll("input[data-control]").forEach(function (input) {
      input.addEventListener("input", function () {
        state[+input.dataset.control] = +input.value;
        input.nextElementSibling.textContent = D.labels[+input.dataset.control][+input.value];
        draw();
      });
    });
    root.querySelectorAll("button[data-control]").forEach(function (button) {
      button.addEventListener("click", function () {
        var c = +button.dataset.control;
        state[c] = +button.dataset.option;
        root.querySelectorAll('button[data-control="' + c + '"]').forEach(function (b) {
          b.setAttribute("aria-pressed", String(b === button));
        });
        draw();
      });
    });
    root.dataset.ready = "true";
  }
  (function boot(tries) {  // a notebook may run this before the output is in the page
    var root = document.getElementById(ID);
    if (root) mount(root); else if (tries < 100) setTimeout(boot, 50, tries + 1);
  })(0);
})();
"""


@dataclass(frozen=True, eq=False)
class Image:
    """An image panel: ``(H, W, C)`` uint8 pixels (``C`` 1 or 3), shown enlarged ``scale`` times
    (``None``: the explorer's ``scale``)."""

    pixels: np.ndarray
    caption: str = ""
    scale: float | None = None


@dataclass(frozen=True)
class Bars:
    """A bar chart panel: per label, its bar's length as a fraction of the axis (0 to 1) and the
    value shown beside it."""

    labels: tuple[str, ...]
    fractions: tuple[float, ...]
    texts: tuple[str, ...]
    highlight: tuple[int, ...] = ()
    caption: str = ""
    horizontal: bool = False


@dataclass(frozen=True)
class Text:
    """A line of text across the whole frame."""

    text: str


Panel = Image | Bars | Text


def image(
    pixels: torch.Tensor | np.ndarray, caption: str = "", scale: float | None = None
) -> Image:
    """An image panel.

    Args:
        pixels: ``(C, H, W)`` with ``C`` 1 or 3, or ``(H, W)``: uint8, or float in [0, 1]
            (clamped). Three equal channels are sent as one grey channel.
        caption: shown under the image (``\\n`` breaks the line), and its alt text.
        scale: CSS pixels per image pixel (default: the explorer's ``scale``).
    """
    array = (
        pixels.detach().cpu().numpy() if isinstance(pixels, torch.Tensor) else np.asarray(pixels)
    )
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3):
        raise ValueError(f"image wants (C, H, W) with C 1 or 3, or (H, W); got {array.shape}")
    if array.dtype != np.uint8:
        array = np.round(np.clip(array.astype(np.float32), 0, 1) * 255).astype(np.uint8)
    if array.shape[0] == 3 and (array[0] == array[1]).all() and (array[0] == array[2]).all():
        array = array[:1]
    return Image(np.ascontiguousarray(array.transpose(1, 2, 0)), caption, scale)


def bars(
    labels: Sequence[str],
    values: Sequence[float] | torch.Tensor | np.ndarray,
    caption: str = "",
    highlight: int | Collection[int] = (),
    vmax: float | None = 1.0,
    fmt: str = ".0%",
    horizontal: bool = False,
) -> Bars:
    """A bar chart panel, drawn by the browser from its numbers (no picture is sent).

    Args:
        labels: ``K`` bar names.
        values: ``(K,)`` bar lengths; each bar also shows its value, formatted with ``fmt``.
        caption: shown under the chart.
        highlight: index or indices of the bars drawn in :data:`HIGHLIGHT_COLOR`.
        vmax: the value of a full-length bar (``None``: the largest value).
        fmt: format spec of the values shown (default: percent, for probabilities).
        horizontal: bars left to right, one row per label (else side by side, bottom up).
    """
    values = [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    labels = tuple(str(label) for label in labels)
    if len(values) != len(labels):
        raise ValueError(f"bars got {len(labels)} labels but {len(values)} values")
    top = max(values, default=1.0) if vmax is None else vmax
    top = top if top > 0 else 1.0
    chosen = _indices(highlight)
    if any(not 0 <= i < len(labels) for i in chosen):
        raise ValueError(f"highlight {chosen} outside the {len(labels)} bars")
    fractions = tuple(min(max(v / top, 0.0), 1.0) for v in values)
    return Bars(
        labels, fractions, tuple(format(v, fmt) for v in values), chosen, caption, horizontal
    )


def _indices(highlight: int | Collection[int] | torch.Tensor | np.ndarray) -> tuple[int, ...]:
    if isinstance(highlight, torch.Tensor | np.ndarray):
        return tuple(int(i) for i in np.atleast_1d(np.asarray(highlight)))
    if isinstance(highlight, Collection):
        return tuple(int(i) for i in highlight)
    return (int(highlight),)


def text(message: str) -> Text:
    """A line of text across the frame (a verdict, or why a combination shows nothing)."""
    return Text(str(message))


Controls = Mapping[str, Sequence[Hashable] | Mapping[str, Hashable]]


def _options(controls: Controls) -> list[tuple[str, list[str], list[Hashable]]]:
    """``(name, labels, values)`` of every control; a control is a sequence of values (each shown
    as ``str``) or a ``{label: value}`` mapping."""
    if not controls:
        raise ValueError("explorer needs at least one control")
    out = []
    for name, options in controls.items():
        if isinstance(options, Mapping):
            labels, values = [str(k) for k in options], list(options.values())
        else:
            values = list(options)
            labels = [format(v, "g") if isinstance(v, float) else str(v) for v in values]
        if not values:
            raise ValueError(f"control {name!r} has no options")
        if len(set(values)) != len(values):
            raise ValueError(f"control {name!r} repeats an option: {values}")
        out.append((str(name), labels, values))
    return out


def precompute(
    render: Callable[..., Panel | Sequence[Panel]], controls: Controls
) -> dict[tuple, Panel | Sequence[Panel]]:
    """Every frame of a widget: ``render(*values)`` for every combination of the controls.

    Args:
        render: takes one value per control, in the controls' order, and returns a panel or a
            list of panels (what ``interact``'s function would draw).
        controls: ``{name: options}`` as for :func:`explorer`.

    Returns:
        ``{(value, ...): frame}``, one entry per combination (the product of the option counts).
    """
    values = [v for _, _, v in _options(controls)]
    return {combo: render(*combo) for combo in itertools.product(*values)}


class _ImageTable:
    """Unique PNGs, base64: an image equal to a stored one, or to a quarter turn of a stored
    square one, points at it (with the turn, which CSS undoes)."""

    def __init__(self) -> None:
        self.encoded: list[str] = []
        self._index: dict[bytes, int] = {}

    @staticmethod
    def _key(pixels: np.ndarray) -> bytes:
        return hashlib.sha1(repr(pixels.shape).encode() + pixels.tobytes()).digest()

    def add(self, pixels: np.ndarray) -> tuple[int, int]:
        """``(index, quarter turns counter-clockwise)`` that show ``pixels``."""
        turns = range(4) if pixels.shape[0] == pixels.shape[1] else range(1)
        for turn in turns:  # pixels == rot90(stored, turn)  ⇔  stored == rot90(pixels, -turn)
            key = self._key(np.ascontiguousarray(np.rot90(pixels, -turn)))
            if key in self._index:
                return self._index[key], turn
        self._index[self._key(pixels)] = len(self.encoded)
        self.encoded.append(base64.b64encode(_png(pixels)).decode("ascii"))
        return len(self.encoded) - 1, 0


def _png(pixels: np.ndarray) -> bytes:
    """PNG bytes of ``(H, W, C)`` uint8 pixels."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
        buffer, "PNG", optimize=True
    )
    return buffer.getvalue()


_ALWAYS = ("kind", "image", "labels", "texts", "px", "width", "height")


def _panel_data(panel: Panel, table: _ImageTable, scale: float) -> dict:
    """The JSON the page draws a panel from, less the keys that hold a false value (the page
    reads a missing key as false)."""
    if isinstance(panel, Text):
        data = {"kind": "text", "text": panel.text}
    elif isinstance(panel, Bars):
        length = BAR_WIDTH if panel.horizontal else BAR_HEIGHT
        data = {
            "kind": "bars", "labels": panel.labels, "texts": panel.texts,
            "px": [round(f * length) for f in panel.fractions], "highlight": panel.highlight,
            "caption": panel.caption, "horizontal": panel.horizontal,
        }  # fmt: skip
    elif isinstance(panel, Image):
        index, turn = table.add(panel.pixels)
        s = scale if panel.scale is None else panel.scale
        h, w = panel.pixels.shape[:2]
        data = {"kind": "image", "image": index, "turn": turn, "caption": panel.caption,
                "width": round(w * s), "height": round(h * s)}  # fmt: skip
    else:
        raise TypeError(f"a frame holds image(), bars() and text() panels, not {type(panel)}")
    return {k: v for k, v in data.items() if v or k in _ALWAYS}


def _frame_list(frame: Panel | Sequence[Panel], key: tuple) -> list[Panel]:
    panels = [frame] if isinstance(frame, Image | Bars | Text) else list(frame)
    if not panels:
        raise ValueError(f"the frame for {key} is empty")
    return panels


def _ordered_frames(
    frames: Mapping[Hashable, Panel | Sequence[Panel]], options: list
) -> list[list[Panel]]:
    """The frames in the order the page indexes them (row-major over the controls), each key
    checked: one frame for every combination, no other."""
    bare = set(options[0][2]) if len(options) == 1 else set()  # one control: bare values too
    by_key = {(k,) if k in bare else k: v for k, v in frames.items()}
    combos = list(itertools.product(*(values for _, _, values in options)))
    missing = [c for c in combos if c not in by_key]
    if missing:
        names = ", ".join(name for name, _, _ in options)
        raise ValueError(
            f"frames lacks {len(missing)} of the {len(combos)} combinations of ({names}), "
            f"e.g. {missing[:3]}: give one frame for each (sb.widgets.precompute makes them all)"
        )
    extra = set(by_key) - set(combos)
    if extra:
        raise ValueError(f"frames has keys that match no combination of options: {list(extra)[:3]}")
    return [_frame_list(by_key[c], c) for c in combos]


def _initial_state(options: list, initial: Mapping[str, Hashable] | None) -> list[int]:
    state = [0] * len(options)
    names = [name for name, _, _ in options]
    for name, value in (initial or {}).items():
        if name not in names:
            raise ValueError(f"initial names {name!r}, which is not a control ({names})")
        values = options[names.index(name)][2]
        if value not in values:
            raise ValueError(f"initial {name}={value!r} is not one of its options {values}")
        state[names.index(name)] = values.index(value)
    return state


def _esc(s: str) -> str:
    return html.escape(str(s), quote=True)


def _bar_html(p: dict, i: int) -> str:
    size = f"{'width' if p.get('horizontal') else 'height'}:{p['px'][i]}px"
    hl = " sbw-hl" if i in p.get("highlight", ()) else ""
    bar = f'<span class="sbw-track"><span class="sbw-bar{hl}" style="{size}"></span></span>'
    label, value = f"<span>{_esc(p['labels'][i])}</span>", f"<span>{_esc(p['texts'][i])}</span>"
    return f"<div>{label + bar + value if p.get('horizontal') else value + bar + label}</div>"


def _panel_html(p: dict, images: list[str]) -> str:
    """The same markup as the page's ``panel`` function, for the first frame (shown even where
    scripts do not run)."""
    caption = f'<div class="sbw-caption">{_esc(p["caption"])}</div>' if p.get("caption") else ""
    if p["kind"] == "text":
        return f'<div class="sbw-text">{_esc(p.get("text", ""))}</div>'
    if p["kind"] == "image":
        turn = f' style="transform:rotate({-90 * p["turn"]}deg)"' if p.get("turn") else ""
        return (
            f'<div class="sbw-panel"><img data-image="{p["image"]}" '
            f'src="data:image/png;base64,{images[p["image"]]}" '
            f'width="{p["width"]}" height="{p["height"]}" alt="{_esc(p.get("caption", ""))}"{turn}>'
            f"{caption}</div>"
        )
    bars_html = "".join(_bar_html(p, i) for i in range(len(p["labels"])))
    kind = "h" if p.get("horizontal") else "v"
    return f'<div class="sbw-panel"><div class="sbw-{kind}bars">{bars_html}</div>{caption}</div>'


def _control_html(c: int, name: str, labels: list[str], chosen: int, max_buttons: int) -> str:
    """A slider (with the chosen option's label beside it) or a row of buttons."""
    if len(labels) <= max_buttons:
        buttons = "".join(
            f'<button type="button" data-control="{c}" data-option="{i}" '
            f'aria-pressed="{"true" if i == chosen else "false"}">{_esc(label)}</button>'
            for i, label in enumerate(labels)
        )
        return f'<div class="sbw-control" role="group" aria-label="{_esc(name)}">' + (
            f"<span>{_esc(name)}</span>{buttons}</div>"
        )
    return (
        f'<label class="sbw-control"><span>{_esc(name)}</span><input type="range" min="0" '
        f'max="{len(labels) - 1}" step="1" value="{chosen}" data-control="{c}">'
        f"<output>{_esc(labels[chosen])}</output></label>"
    )


def _script_json(value: object) -> str:
    """JSON that is safe inside a ``<script>`` element."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


_displayed = itertools.count()  # a fresh element id per display: one page may show a widget twice


class Explorer:
    """Precomputed frames with their controls; displays as a self-contained HTML snippet.

    Attributes:
        n_frames: one per combination of the controls' options.
        n_images: PNGs sent (each distinct image once).
    """

    def __init__(self, data: dict, title: str, controls_html: str) -> None:
        self._data, self._title, self._controls_html = data, title, controls_html
        self.n_frames, self.n_images = len(data["frames"]), len(data["images"])
        self._digest = hashlib.sha1(_script_json(data).encode()).hexdigest()[:10]

    def _repr_html_(self) -> str:
        """The snippet: style, controls, the first frame as plain HTML, the data and the script."""
        element = f"sslbook-widget-{self._digest}-{next(_displayed)}"
        first = self._data["frames"][_flat_index(self._data["sizes"], self._data["state"])]
        shown = {p["image"] for p in first if p["kind"] == "image"}
        images = self._data["images"]  # the first frame's go in its <img> tags, not twice
        data = {**self._data, "images": [None if i in shown else s for i, s in enumerate(images)]}
        title = f'<div class="sbw-title">{_esc(self._title)}</div>' if self._title else ""
        script = _JS.replace("__ID__", _script_json(element), 1)
        script = script.replace("__DATA__", _script_json(data), 1)
        return (
            f'<div class="sbw" id="{element}"><style>{_CSS.strip()}</style>{title}'
            f'<div class="sbw-controls">{self._controls_html}</div><div class="sbw-frame">'
            f"{''.join(_panel_html(p, images) for p in first)}</div>"
            f"<script>{script.strip()}</script></div>"
        )

    @property
    def nbytes(self) -> int:
        """Size of the HTML snippet in bytes (UTF-8): what the widget adds to a page."""
        return len(self._repr_html_().encode())

    def __repr__(self) -> str:
        return f"<Explorer: {self.n_frames} frames, {self.n_images} images, {self.nbytes} bytes>"


def _flat_index(sizes: list[int], state: list[int]) -> int:
    k = 0
    for size, chosen in zip(sizes, state, strict=True):
        k = k * size + chosen
    return k


def explorer(
    frames: Mapping[Hashable, Panel | Sequence[Panel]],
    controls: Controls,
    title: str = "",
    initial: Mapping[str, Hashable] | None = None,
    scale: float = 4,
    max_buttons: int = 6,
    max_bytes: int | None = MAX_BYTES,
) -> Explorer:
    """A widget that needs no kernel: controls that swap precomputed frames.

    Args:
        frames: ``{(value, ...): frame}``, one value per control in the controls' order (a bare
            value when there is one control), for every combination of options; a frame is a
            panel or a list of :func:`image`, :func:`bars` and :func:`text` panels
            (:func:`precompute` makes them all from a function).
        controls: ``{name: options}``, in the order shown: a sequence of values (shown with
            ``str``), or ``{label: value}``. At most ``max_buttons`` options show as buttons,
            more as a slider.
        title: a line above the controls.
        initial: ``{name: value}`` shown first (default: every control's first option).
        scale: CSS pixels per image pixel (32x32 images show as 128x128 at the default).
        max_buttons: the most options a control shows as buttons.
        max_bytes: refuse a snippet larger than this (``None``: no limit).

    Returns:
        An :class:`Explorer`: the notebook cell displays it; :attr:`Explorer.nbytes` is its size.

    Raises:
        ValueError: a combination without a frame, a key that matches none, an empty control or
            frame, an ``initial`` that is no option, or a snippet over ``max_bytes``.
        TypeError: a frame holds something else than panels.
    """
    options = _options(controls)
    ordered = _ordered_frames(frames, options)
    table = _ImageTable()
    data = {
        "images": table.encoded,
        "frames": [[_panel_data(p, table, scale) for p in frame] for frame in ordered],
        "sizes": [len(values) for _, _, values in options],
        "labels": [labels for _, labels, _ in options],
        "state": _initial_state(options, initial),
    }
    controls_html = "".join(
        _control_html(c, name, labels, data["state"][c], max_buttons)
        for c, (name, labels, _) in enumerate(options)
    )
    widget = Explorer(data, title, controls_html)
    if max_bytes is not None and widget.nbytes > max_bytes:
        raise ValueError(
            f"the widget weighs {widget.nbytes:,} bytes, over max_bytes={max_bytes:,}: offer fewer "
            f"options, smaller images, or pass a larger max_bytes ({widget!r})"
        )
    return widget
