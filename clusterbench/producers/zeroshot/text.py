"""The text side of CLIP zero-shot (appendix C.2), computed once per model and cached.

- Class names: the WordNet lemmas of each class, i.e. the tree's `name` column (timm's
  imagenet_synset_to_lemma.txt) split at commas.
- Prompts: open_clip's `SIMPLE_IMAGENET_TEMPLATES` (the 7 templates of C.2). Each (class,
  lemma) gets the normalised mean of its normalised prompt embeddings, exactly what
  open_clip's `build_zero_shot_classifier` computes, with the text tower and tokenizer of the
  model that made the image features (the extractor config names it).
- Lemma choice (`zeroshot.lemma`): `majority` (our reading of C.2: per class, zero-shot over
  the class's own lemmas on its train images, the lemma that wins most images embeds the
  class), `mean` (normalised mean of the lemma embeddings) or `first`.
The lemma embeddings are cached under `<cache_dir>/zeroshot_text/<key>.npz`, keyed by model,
lemma list, class of each lemma and templates; the choice is cheap and redone each time. The
cache carries its class ids (`wnids`: the class of each row, `lemmas`: its text) and is used
only when they are the ones asked for, so its rows can never land on other classes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from clusterbench.core.atomic import atomic_file
from clusterbench.core.device import torch_device
from clusterbench.core.errors import ConfigError
from clusterbench.core.fingerprint import digest
from clusterbench.data.normalize import l2_normalize
from clusterbench.data.rows import Rows
from clusterbench.producers.zeroshot.embeddings import ClassEmbeddings, check_rows

log = logging.getLogger(__name__)

LEMMA_CHOICES = ("majority", "mean", "first")
MODEL_KEYS = ("library", "arch", "pretrained", "weights", "model_kwargs")


def lemmas(name: str) -> list[str]:
    """The distinct lemmas of a tree `name` ("dog, domestic dog, Canis familiaris")."""
    out: list[str] = []
    for part in name.split(","):
        if (lemma := part.strip()) and lemma not in out:
            out.append(lemma)
    return out or [name]


def templates() -> tuple[Callable[[str], str], ...]:
    from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES

    return tuple(SIMPLE_IMAGENET_TEMPLATES)


def check_text_tower(extractor: dict, store_meta: dict) -> None:
    """Zero-shot needs the CLIP model that made the features; say so before loading anything."""
    # An extracted store's meta.json names the model (library, architecture) at top level.
    made = store_meta if isinstance(store_meta, dict) else {}
    library = extractor.get("library")
    hint = (
        "; pass zeroshot.text_embeddings=FILE (10450 x D class embeddings in tree order with "
        "their class ids, from the text tower of the model that made the features)"
    )
    if library != "open_clip":
        name = extractor.get("name") or "none"
        raise ConfigError(
            f"extractor={name} has no text tower (library={library}, not an open_clip CLIP "
            f"model), so zero-shot cannot embed class names{hint}"
        )
    if made.get("extractor") == "synthetic":
        raise ConfigError(f"the store holds generated features, which have no text tower{hint}")
    if made.get("library") not in (None, "open_clip"):
        raise ConfigError(
            f"the store was made by a {made.get('library')} model ({made.get('architecture')}), "
            f"which has no text tower{hint}"
        )
    arch = made.get("architecture")
    if arch is not None and arch != extractor.get("arch"):
        raise ConfigError(
            f"the store's features come from {arch} but extractor.arch={extractor.get('arch')}; "
            "the text tower must be the one of the model that made the image features"
        )


def encode_lemmas(
    extractor: dict, names: Sequence[str], batch: int, device: torch.device
) -> tuple[np.ndarray, float]:
    """(len(names), D) unit text embeddings (mean over the 7 prompts) and the logit scale."""
    import open_clip

    from clusterbench.producers.extract.backbones.build import build_backbone

    model = build_backbone(extractor).module.model.to(device)
    tokenizer = open_clip.get_tokenizer(str(extractor["arch"]))
    with torch.inference_mode():
        weights = open_clip.build_zero_shot_classifier(
            model,
            tokenizer,
            classnames=list(names),
            templates=templates(),
            num_classes_per_batch=batch,
            device=device,
        )
        scale = float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 100.0
    return weights.T.float().cpu().numpy(), scale


def lemma_embeddings(
    extractor: dict,
    names: Sequence[str],
    wnids: Sequence[str],
    cache_dir: Path,
    batch: int,
    device: torch.device,
) -> tuple[np.ndarray, float, bool]:
    """Cached `encode_lemmas` of the lemmas `names`, row i a lemma of class `wnids[i]`:
    (embeddings, logit scale, whether it came from the cache)."""
    key = digest(
        {
            "model": {k: extractor.get(k) for k in MODEL_KEYS},
            "lemmas": list(names),
            "wnids": list(wnids),
            "templates": [t("{}") for t in templates()],
        },
        16,
    )
    file = cache_dir / "zeroshot_text" / f"{key}.npz"
    if file.is_file() and (hit := read_cache(file, names, wnids)) is not None:
        return hit[0], hit[1], True
    emb, scale = encode_lemmas(extractor, names, batch, device)
    with atomic_file(file) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            vectors=emb.astype(np.float32),
            wnids=np.array(list(wnids), dtype=str),
            lemmas=np.array(list(names), dtype=str),
            logit_scale=np.float64(scale),
            arch=np.array(str(extractor.get("arch"))),
        )
    return emb, scale, False


def read_cache(
    file: Path, names: Sequence[str], wnids: Sequence[str]
) -> tuple[np.ndarray, float] | None:
    """(embeddings, logit scale) of a cache file whose rows are the lemmas `names` of the
    classes `wnids`, row for row; None (with the reason logged) for any other file."""
    try:
        with np.load(file, allow_pickle=False) as npz:
            emb, scale = npz["vectors"], float(npz["logit_scale"])
            same = npz["wnids"].tolist() == list(wnids) and npz["lemmas"].tolist() == list(names)
    except (KeyError, ValueError, OSError, EOFError) as exc:
        log.warning("ignoring the text cache %s (%s); embedding the lemmas again", file, exc)
        return None
    if not same or emb.shape[0] != len(names):
        log.warning("ignoring the text cache %s (other classes); embedding them again", file)
        return None
    return emb, scale


def majority_lemma(
    ptr: np.ndarray,
    lemma_emb: np.ndarray,
    rows: Rows,
    labels: np.ndarray,
    device: torch.device,
    chunk_rows: int = 8192,
) -> np.ndarray:
    """(C,) index into the flat lemma list: per class, the lemma that wins most train images
    in a zero-shot over the class's own lemmas (ties and image-less classes: the first)."""
    c = ptr.size - 1
    count = np.diff(ptr)
    width = int(count.max())
    # (C, width) flat lemma index per class, padded with the class's first lemma.
    slot = np.minimum(np.arange(width)[None, :], count[:, None] - 1)
    pad = torch.as_tensor(ptr[:-1, None] + slot, device=device)
    valid = torch.as_tensor(np.arange(width)[None, :] < count[:, None], device=device)
    emb = torch.as_tensor(lemma_emb, device=device)
    votes = torch.zeros(c * width, dtype=torch.int64, device=device)
    labels = np.asarray(labels, dtype=np.int64)
    multi = count[labels] > 1
    with torch.inference_mode():
        for start in range(0, len(rows), chunk_rows):
            stop = min(start + chunk_rows, len(rows))
            keep = np.flatnonzero(multi[start:stop])
            if keep.size == 0:
                continue
            x = l2_normalize(torch.as_tensor(rows.take(start + keep)).to(device))
            lab = torch.as_tensor(labels[start + keep], device=device)
            sims = torch.einsum("nd,nkd->nk", x, emb[pad[lab]])
            sims.masked_fill_(~valid[lab], float("-inf"))
            votes.index_add_(
                0, lab * width + sims.argmax(1), torch.ones_like(lab, dtype=torch.int64)
            )
    best = votes.view(c, width).argmax(1).cpu().numpy()  # first maximum: ties -> first lemma
    return ptr[:-1] + best


def text_class_embeddings(
    zeroshot: dict,
    extractor: dict,
    store_meta: dict,
    lemma_data: Callable[[], tuple[Rows, np.ndarray]] | None,
    cache_dir: Path,
    device: str,
    names: Sequence[str] | None = None,
    needed: np.ndarray | None = None,
    wnids: Sequence[str] | None = None,
) -> ClassEmbeddings:
    """(C, D) class embeddings from the open_clip text tower, one lemma (or the mean) per class.

    `needed` limits the text work to those classes (the others get zero rows, and must never
    be candidates); default: every class of the tree. `names` and `wnids` are the classes'
    names and ids in tree order (default: the shipped tree's)."""
    check_text_tower(extractor, store_meta)
    choice = str(zeroshot.get("lemma", "majority"))
    if choice not in LEMMA_CHOICES:
        raise ConfigError(f"zeroshot.lemma={choice!r}: expected one of {LEMMA_CHOICES}")
    if names is None or wnids is None:
        from clusterbench.benchmarks.imagenet21k.tree import load_tree

        tree = load_tree()
        names = tree.class_names if names is None else names
        wnids = tree.class_wnids if wnids is None else wnids
    if len(wnids) != len(names):
        raise ValueError(f"{len(names)} class names but {len(wnids)} class ids")
    c = len(names)
    classes = np.arange(c) if needed is None else np.unique(np.asarray(needed, dtype=np.int64))
    per_class = [lemmas(names[k]) for k in classes]
    ptr = np.zeros(classes.size + 1, dtype=np.int64)
    np.cumsum([len(v) for v in per_class], out=ptr[1:])
    flat = [lemma for v in per_class for lemma in v]
    flat_wnids = [wnids[k] for k, v in zip(classes, per_class, strict=True) for _ in v]
    dev = torch_device(device)
    emb, scale, cached = lemma_embeddings(
        extractor, flat, flat_wnids, cache_dir, int(zeroshot.get("text_batch") or 64), dev
    )
    if choice == "first":
        chosen = emb[ptr[:-1]]
    elif choice == "mean":
        sums = np.add.reduceat(emb, ptr[:-1], axis=0)
        chosen = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    else:
        if lemma_data is None:
            raise ConfigError("zeroshot.lemma=majority needs train images; use mean or first")
        rows, labels = lemma_data()
        local = np.full(c, -1, dtype=np.int64)
        local[classes] = np.arange(classes.size)
        lab = local[np.asarray(labels, dtype=np.int64)]
        known = np.flatnonzero(lab >= 0)
        view = _Subset(rows, known)
        chosen = emb[majority_lemma(ptr, emb, view, lab[known], dev)]
    vectors = np.zeros((c, emb.shape[1]), dtype=np.float32)
    vectors[classes] = check_rows(np.asarray(chosen, dtype=np.float32), "the text tower")
    if zeroshot.get("logit_scale") is not None:
        scale = float(zeroshot["logit_scale"])
    info = {
        "source": f"open_clip {extractor.get('arch')} ({extractor.get('pretrained') or 'random init'})",
        "lemma": choice,
        "num_lemmas": len(flat),
        "classes_embedded": int(classes.size),
        "text_from_cache": cached,
        "chosen_lemmas": {
            str(int(k)): flat[int(i)]
            for k, i in zip(
                classes[:20], _chosen_index(choice, ptr, emb, chosen)[:20], strict=False
            )
        },
    }
    return ClassEmbeddings(vectors, scale, info, "built in tree order by the text tower")


def _chosen_index(choice: str, ptr: np.ndarray, emb: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Flat lemma index behind each chosen row (for the record; `mean` names the first)."""
    if choice == "majority":
        sims = np.einsum("cd,ld->cl", chosen[:20], emb)
        return sims.argmax(1)
    return ptr[:-1]


class _Subset:
    """Some rows of a row view, by index (the samples of the embedded classes)."""

    def __init__(self, rows: Rows, index: np.ndarray) -> None:
        self.rows, self.index = rows, index

    def __len__(self) -> int:
        return int(self.index.size)

    @property
    def dim(self) -> int:
        return self.rows.dim

    def take(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.rows.take(self.index[rows]))

    def chunk(self, start: int, stop: int) -> np.ndarray:
        return self.take(np.arange(start, stop))
