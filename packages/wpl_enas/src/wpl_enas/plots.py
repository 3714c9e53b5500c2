"""The figures: drawings of sampled cells (spec §2.12), the GIF of ``generate_gif.py``, the
forgetting curve of a search run (``forgetting.png``, the measure behind the README's
``enas_rnn.png``) and the two-model figure of ``two_models.py`` (the paper's Fig. 2 protocol).

Every cell drawing writes the Graphviz ``.dot`` text; the PNG comes from the ``dot`` binary when it
is installed, otherwise from a plain Pillow rendering of the node and edge lists, so that the
GIF path works (and is tested) on machines without Graphviz.
"""

from __future__ import annotations

import glob
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
from forgetting_common.atomic import atomic_write_bytes, atomic_write_text
from forgetting_common.errors import UserError
from forgetting_common.figures import save_figure

from wpl_enas.dags import MicroArchi

logger = logging.getLogger("wpl_enas")

COLOURS = {"tanh": "yellow", "relu": "pink", "identity": "orange", "sigmoid": "greenyellow", "avg": "seagreen3"}


def _q(text: str) -> str:
    return '"' + str(text).replace('"', r"\"") + '"'


def rnn_dot(dag) -> tuple[str, list[str], list[tuple[str, str, str]]]:
    lines = ["strict digraph G {", "  rankdir=TB;", "  node [shape=box, style=filled, color=black];"]
    nodes = {-1: ("x[t]", "white"), -2: ("h[t-1]", "skyblue")}
    node0 = dag[-1][0].name
    nodes[0] = (node0, COLOURS.get(node0.lower(), "white"))
    edges = []
    for src, children in sorted(dag.items()):
        for child in children:
            name = child.name
            label = name if name.startswith(("x", "h", "avg")) else f"{name}\n({child.id})"
            colour = "skyblue" if name.startswith("h") else COLOURS.get(name.lower(), "white")
            nodes[child.id] = (label, colour)
            edges.append((src, child.id, ""))
    for nid, (label, colour) in sorted(nodes.items()):
        lines.append(f"  n{nid if nid >= 0 else 'm' + str(-nid)} [label={_q(label)}, fillcolor={_q(colour)}];")
    for s, t, _ in edges:
        lines.append(f"  n{s if s >= 0 else 'm' + str(-s)} -> n{t};")
    lines.append("}")
    return "\n".join(lines) + "\n", [v[0] for _, v in sorted(nodes.items())], [(nodes[s][0], nodes[t][0], lab) for s, t, lab in edges]


def cnn_dot(arch: MicroArchi) -> tuple[str, list[str], list[tuple[str, str, str]]]:
    lines = ["digraph G {", "  rankdir=TB;", "  node [shape=box, style=filled, fillcolor=white, color=black];"]
    names, edges = [], []
    for prefix, cell in (("normal", arch.normal_cell), ("reduce", arch.reduced_cell)):
        def nid(i, prefix=prefix):
            return {0: f"{prefix}_x[t-1]", 1: f"{prefix}_x[t]"}.get(i, f"{prefix}_Node {i}")
        used_as_source = {s for s, _, _ in cell}
        all_nodes = {0, 1} | {t for _, t, _ in cell}
        for n in sorted(all_nodes):
            names.append(nid(n))
        edges.append((nid(0), nid(1), "prev_cell"))
        for s, t, op in cell:
            edges.append((nid(s), nid(t), op))
        concat = f"{prefix}_concat"
        names.append(concat)
        for n in sorted(all_nodes - used_as_source):
            edges.append((nid(n), concat, ""))
    for n in names:
        lines.append(f"  {_q(n)};")
    for s, t, lab in edges:
        lines.append(f"  {_q(s)} -> {_q(t)}" + (f" [label={_q(lab)}]" if lab else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n", names, edges


def _pillow_png(names: list[str], edges: list[tuple[str, str, str]], title: str) -> bytes:
    import io

    from PIL import Image, ImageDraw

    rows = [title, "nodes: " + ", ".join(n.replace("\n", " ") for n in names)]
    rows += [f"{s.replace(chr(10), ' ')} -> {t.replace(chr(10), ' ')}" + (f"  [{lab}]" if lab else "") for s, t, lab in edges]
    width = max(240, 7 * max(len(r) for r in rows) + 20)
    img = Image.new("RGB", (width, 16 * len(rows) + 20), "white")
    draw = ImageDraw.Draw(img)
    for i, row in enumerate(rows):
        draw.text((10, 10 + 16 * i), row, fill="black")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def draw_network(dag, path: str | Path) -> Path:
    """Write ``path`` (PNG) and ``path`` with suffix ``.dot``; returns the PNG path."""
    path = Path(path)
    dot, names, edges = cnn_dot(dag) if isinstance(dag, MicroArchi) else rnn_dot(dag)
    atomic_write_text(path.with_suffix(".dot"), dot)
    exe = shutil.which("dot")
    png = None
    if exe:
        try:
            png = subprocess.run([exe, "-Tpng"], input=dot.encode(), capture_output=True, check=True, timeout=60).stdout
        except (subprocess.SubprocessError, OSError) as err:
            logger.warning("graphviz 'dot' failed (%s); drawing a plain PNG instead", err)
    if not png:
        png = _pillow_png(names, edges, path.stem)
    atomic_write_bytes(path, png)
    return path


def _font(size: int):
    from PIL import ImageFont

    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "Arial.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def frame_paths(paths: list[str], max_frame: int) -> list[str]:
    """Every k-th of the sorted paths, k = max(1, len // max_frame) (the original crashed at k = 0)."""
    paths = sorted(paths)
    step = max(1, len(paths) // max(1, max_frame))
    return paths[::step]


def make_gif(model_dir: str | Path, output: str | Path, max_frame: int = 50, title: str = "") -> Path:
    import imageio.v3 as iio
    from PIL import Image, ImageDraw

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"run folder {model_dir} not found; pass --model_name=<folder under --log_dir>")
    paths = frame_paths(glob.glob(str(model_dir / "networks" / "*.png")), max_frame)
    if not paths:
        raise UserError(f"{model_dir}/networks holds no PNG drawings; train with --use_tensorboard=True first")
    images = []
    for p in paths:
        try:
            with Image.open(p) as img:
                images.append(np.asarray(img.convert("RGB")))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            raise UserError(f"cannot read drawing {p} ({err})") from err
    max_h = max(im.shape[0] for im in images)
    max_w = max(im.shape[1] for im in images)
    font = _font(30)
    frames = []
    for p, im in zip(paths, images):
        canvas = np.full((max_h, max_w, 3), 255, dtype=np.uint8)
        top, left = (max_h - im.shape[0]) // 2, (max_w - im.shape[1]) // 2
        canvas[top: top + im.shape[0], left: left + im.shape[1]] = im
        frame = Image.fromarray(canvas)
        fields = Path(p).stem.split("-")
        step = f"{int(fields[1]):,}" if len(fields) > 1 and fields[1].isdigit() else "?"
        ImageDraw.Draw(frame).text((max_h // 20, max_h // 20), f"{title}\nstep: {step}", fill="black", font=font)
        frames.append(np.asarray(frame))
    output = Path(output)
    if output.exists():
        logger.warning("overwriting %s", output)
    data = iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=500, loop=0)
    atomic_write_bytes(output, data)
    return output


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_forgetting(records: list[dict], path: str | Path, title: str) -> Path:
    """Per epoch: the mean and max of err2 − err1 over the step's architectures (spec §3.9), the
    epochs with WPL on shaded; err is the validation perplexity (RNN) or accuracy (CNN)."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in records]
    metric = records[0].get("metric", "err")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(epochs, [r["mean_diff"] for r in records], marker="o", label="mean diff")
    ax.plot(epochs, [r["max_diff"] for r in records], marker=".", linestyle="--", label="max diff")
    for r in records:
        if r.get("wpl_on"):
            ax.axvspan(r["epoch"] - 0.5, r["epoch"] + 0.5, color="tab:green", alpha=0.12, linewidth=0)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set(xlabel="epoch", ylabel=f"{metric} after − before the shared phase",
           title=f"{title}: forgetting (shaded: WPL on)")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def plot_two_models(per_seed: list[dict], path: str | Path, title: str) -> Path:
    """Model A's test loss and model B's test error while B trains, one line per arm (seed mean)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for lab in per_seed[0]["arms"]:
        curves = [s["arms"][lab]["curve"] for s in per_seed]
        n = min(len(c["iter"]) for c in curves)
        it = curves[0]["iter"][:n]
        a = np.mean([c["A_loss"][:n] for c in curves], axis=0)
        b = np.mean([[1 - v for v in c["B_acc"][:n]] for c in curves], axis=0)
        axes[0].plot(it, a, label=lab)
        axes[1].plot(it, b, label=lab)
    axes[0].set(xlabel="B training iterations", ylabel="model A test loss", title="A while B trains")
    axes[1].set(xlabel="B training iterations", ylabel="model B test error", title="B")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
