"""The cluster atlas, tested as a person would use it: every cluster has a page that links back,
the counts match the assignments, images come from files (unreadable ones counted and shown
as the placeholder) or from pixel features, and a headless browser renders the pages without
console errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from rich.console import Console

from clusterbench.core.errors import ConfigError
from clusterbench.explore.__main__ import main as explore_main
from clusterbench.explore.members import TopPerGroup
from clusterbench.explore.site import AtlasSettings, build_atlas
from clusterbench.run import run
from tests.helpers.compose import compose_config
from tests.helpers.stores import sphere_blobs, write_store

QUIET = Console(file=open("/dev/null", "w"))  # noqa: SIM115
K = 5


class Links(HTMLParser):
    """Every href / src and the JSON blocks of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.images: list[str] = []
        self.rows: list[int] = []
        self.scripts: dict[str, str] = {}
        self._script: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "href" in attrs:
            self.hrefs.append(attrs["href"])
        if tag == "img":
            self.images.append(attrs["src"])
            self.rows.append(int(attrs["alt"].removeprefix("row ")))
        if tag == "script" and attrs.get("id"):
            self._script = attrs["id"]

    def handle_data(self, data):
        if self._script:
            self.scripts[self._script] = self.scripts.get(self._script, "") + data

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None


def parse(file: Path) -> Links:
    links = Links()
    links.feed(file.read_text(encoding="utf-8"))
    return links


@pytest.fixture(scope="module")
def run_with_images(tmp_path_factory) -> Path:
    """k-means on 5 blobs whose store lists an image per row (one of them unreadable)."""
    root = tmp_path_factory.mktemp("atlas")
    x, y = sphere_blobs(24, K, 8, seed=2, spread=0.05)
    store = write_store(root / "store", x[:100], y[:100], x[100:], y[100:])
    images = root / "images"
    images.mkdir()
    names = []
    for i, label in enumerate(y[:100]):
        name = f"{i:03d}.png"
        Image.new("RGB", (40, 30), color=(50 * int(label), 80, 120)).save(images / name)
        names.append(name)
    (images / names[7]).write_bytes(b"not an image")
    (store / "train_files.txt").write_text("\n".join(names) + "\n")
    (store / "val_files.txt").write_text("\n".join(f"v{i}.png" for i in range(20)) + "\n")
    cfg = compose_config(root, [f"paths.root_dir={root}", "dataset=custom",
                                f"dataset.path={store}", "logger=none", "device=cpu"])  # fmt: skip
    run(cfg, root / "run", QUIET)
    return root


def test_every_cluster_has_a_page_that_links_back(run_with_images):
    root = run_with_images
    made = build_atlas(root / "run", root / "site", AtlasSettings(images_root=str(root / "images")))
    site = root / "site"
    index = parse(site / "index.html")
    data = json.loads(index.scripts["clusters-data"])
    assignments = pq.read_table(root / "run" / "assignments" / "train.parquet").to_pydict()
    sizes = np.bincount(assignments["cluster"], minlength=K)
    assert [row["size"] for row in data] == sizes.tolist() and made["clusters"] == K
    assert sorted({h for h in index.hrefs if h.startswith("clusters/")}) == sorted(
        f"clusters/c{c}.html" for c in range(K) if sizes[c]
    )
    for c in range(K):
        page = parse(site / "clusters" / f"c{c}.html")
        assert "../index.html" in page.hrefs
        for src in page.images:
            assert (site / "clusters" / src).resolve().is_file(), src
    labels = np.load(root / "store" / "train_labels.npy")
    for row in data:
        counts = np.bincount(labels[np.asarray(assignments["cluster"]) == row["id"]])
        assert row["purity"] == pytest.approx(100 * counts.max() / counts.sum(), abs=0.01)
        assert row["majority"] == f"class {counts.argmax()}"
    assert made["thumbnails"]["unreadable"] == (1 if 7 in _shown(site) else 0)


def _shown(site: Path) -> set[int]:
    return {r for page in (site / "clusters").glob("c*.html") for r in parse(page).rows}


def test_unreadable_images_show_the_placeholder_and_are_counted(run_with_images):
    root = run_with_images
    settings = AtlasSettings(images_root=str(root / "images"), per_group=30)  # every row shown
    made = build_atlas(root / "run", root / "all", settings)
    assert made["thumbnails"] == {"source": f"files under {root / 'images'}", "made": 99,
                                  "unreadable": 1}  # fmt: skip
    pages = "".join(p.read_text() for p in (root / "all" / "clusters").glob("c*.html"))
    assert pages.count("static/missing.svg") >= 1 and (root / "all" / "thumbs" / "0.jpg").is_file()


def test_without_images_the_site_still_shows_the_clusters(run_with_images, tmp_path):
    root = run_with_images
    made = build_atlas(root / "run", tmp_path / "site", AtlasSettings(thumbnails=False))
    assert made["thumbnails"]["made"] == 0
    assert not parse(tmp_path / "site" / "clusters" / "c0.html").images


def test_rows_drawn_from_their_pixel_features(tmp_path):
    cfg = compose_config(tmp_path, [f"paths.root_dir={tmp_path}", "dataset=digits",
                                    "logger=none", "device=cpu", "method.nredo=1"])  # fmt: skip
    run(cfg, tmp_path / "run", QUIET)
    made = explore_main([str(tmp_path / "run"), "images.features_shape=8x8", "per_group=2"])
    assert made["thumbnails"]["source"] == "features" and made["thumbnails"]["made"] > 0
    with Image.open(next((tmp_path / "run" / "atlas" / "thumbs").glob("*.jpg"))) as image:
        assert image.size == (128, 128)


def test_top_rows_per_group_survive_chunking():
    top = TopPerGroup(2)
    top.add(np.array([0, 0, 1]), np.array([0.1, 0.9, 0.5]), np.array([10, 11, 12]))
    top.add(np.array([0, 1, 1]), np.array([0.5, 0.7, 0.2]), np.array([13, 14, 15]))
    assert top.rows_of(3) == [[11, 13], [14, 12], []]


def test_a_run_without_assignments_stops_in_one_line(run_with_images, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(run_with_images / "run", broken)
    shutil.rmtree(broken / "assignments")
    with pytest.raises(ConfigError, match="has no assignments/train.parquet"):
        build_atlas(broken, tmp_path / "site", AtlasSettings())
    with pytest.raises(ConfigError, match="holds no results.json"):
        build_atlas(tmp_path, tmp_path / "site", AtlasSettings())


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def headless(url: str) -> tuple[str, str]:
    done = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=5000", "--dump-dom", url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return done.stdout, done.stderr


@pytest.mark.slow
def test_a_browser_renders_the_index_and_a_cluster_page(run_with_images):
    assert CHROMIUM, "chromium is missing: apt-get install chromium (.ci/run installs it)"
    root = run_with_images
    site = root / "browser"
    build_atlas(root / "run", site, AtlasSettings(images_root=str(root / "images")))
    dom, log = headless((site / "index.html").as_uri())
    assert dom.count('class="cluster-row"') == K and f"{K} of {K} clusters" in dom
    assert "CONSOLE" not in log or "Uncaught" not in log, log
    page = site / "clusters" / "c0.html"
    dom, log = headless(page.as_uri())
    shown = len(parse(page).images)
    assert f'data-images-loaded="{shown}"' in dom and shown > 0
    assert "Uncaught" not in log, log


def test_named_clusters_carry_their_names(run_with_images, tmp_path):
    import pyarrow as pa

    run_dir = tmp_path / "run"
    shutil.copytree(run_with_images / "run", run_dir)
    (run_dir / "naming").mkdir()
    names = [f"blob {c}" for c in range(K)]
    pq.write_table(pa.table({"cluster": list(range(K)), "name": names}),
                   run_dir / "naming" / "names.parquet")  # fmt: skip
    build_atlas(run_dir, tmp_path / "site", AtlasSettings(thumbnails=False))
    data = json.loads(parse(tmp_path / "site" / "index.html").scripts["clusters-data"])
    assert [row["name"] for row in data] == names
    assert "<h1>blob 2</h1>" in (tmp_path / "site" / "clusters" / "c2.html").read_text()
