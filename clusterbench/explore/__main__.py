"""`python -m clusterbench.explore RUN_DIR [images.root=DIR] [out=DIR] [key=value ...]`:
the browsable cluster atlas of a finished run (explore/site.py). Default out:
`<RUN_DIR>/atlas/`; open `index.html` in a browser, from the file system or any static host.

Keys: images.root=DIR (image paths of `*_files.txt` are relative to it; default: the root the
store's meta.json records), images.features_shape=8x8 (draw each row from its own features,
for pixel stores such as the embedded digits), thumbnails=false, split=train|val,
per_group=N (rows per section of a cluster page), seed=N.
"""

from __future__ import annotations

import sys
from pathlib import Path

from clusterbench.core.cli import fail, quiet_libraries, run_command
from clusterbench.explore.site import AtlasSettings, build_atlas

USAGE = (
    "usage: python -m clusterbench.explore RUN_DIR [images.root=DIR] [out=DIR] "
    "[images.features_shape=HxW] [thumbnails=false] [split=train|val] [per_group=N] [seed=N]"
)
KEYS = ("images.root", "out", "images.features_shape", "thumbnails", "split", "per_group", "seed")


def settings_from(values: dict[str, str]) -> AtlasSettings:
    settings = AtlasSettings(images_root=values.get("images.root"))
    if "split" in values:
        if values["split"] not in ("train", "val"):
            fail(f"split={values['split']}: expected train or val")
        settings.split = values["split"]
    for key in ("per_group", "seed"):
        if key in values:
            if not values[key].isdigit() or (key == "per_group" and int(values[key]) < 1):
                fail(
                    f"{key}={values[key]}: expected a whole number"
                    + (" >= 1" * (key == "per_group"))
                )
            setattr(settings, key, int(values[key]))
    if "thumbnails" in values:
        if values["thumbnails"].lower() not in ("true", "false"):
            fail(f"thumbnails={values['thumbnails']}: expected true or false")
        settings.thumbnails = values["thumbnails"].lower() == "true"
    if "images.features_shape" in values:
        parts = values["images.features_shape"].lower().replace("[", "").replace("]", "")
        dims = parts.replace(",", "x").split("x")
        if len(dims) != 2 or not all(d.strip().isdigit() and int(d) > 0 for d in dims):
            fail(f"images.features_shape={values['images.features_shape']}: expected HxW, e.g. 8x8")
        settings.features_shape = (int(dims[0]), int(dims[1]))
    return settings


def main(argv: list[str] | None = None) -> dict:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-") or "=" in args[0]:
        fail(f"expected a run directory first; {USAGE}")
    run_dir, values = Path(args[0]), {}
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            fail(f"unknown argument {arg!r}; {USAGE}")
        values[key] = value
    settings = settings_from(values)
    out = Path(values["out"]) if "out" in values else run_dir / "atlas"
    quiet_libraries()

    def body() -> dict:
        made = build_atlas(run_dir, out, settings)
        thumbs = made["thumbnails"]
        print(
            f"atlas of {made['clusters']:,} clusters, {thumbs['made']:,} thumbnails"
            + (f" ({thumbs['unreadable']:,} images unreadable)" if thumbs["unreadable"] else "")
            + f", {made['bytes'] / 1e6:.1f} MB in {made['seconds']:.1f} s: {out / 'index.html'}"
        )
        return made

    return run_command(body, writable="out")


if __name__ == "__main__":
    main()
