"""CLIP zero-shot classification and hierarchical zero-shot label refining (section 4.2).

Everything works on precomputed image features (a feature store written by `extract`):
- `embeddings`: the class text embeddings, from a user file or open_clip's text tower;
- `text`: lemmas, prompts, the cached text embeddings and the lemma choice of appendix C.2;
- `classify`: chunked zero-shot over a candidate set (all classes, a level, siblings);
- `refine`: leaf-HZR and p-HZR descent, vectorised by tree level;
- `run`: the `zeroshot` command (results.json, calibration figures, predictions.npz);
- `hzr`: the `hzr` command (relabel directories for the leaf_hzr / p_hzr benchmarks);
- `examples`: a PNG grid of relabelled images.
"""
