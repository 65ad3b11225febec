"""The paper's benchmarks as views over a base feature store (features are never copied).

One module per family, each a Hydra `_target_` of `conf/dataset/<name>.yaml`:
- `imagenet1k`: in1k, in1k_odd; `real`: in1k_real (ReaL label sets, sampled-label eval);
- `imagenet21k`: in21k (all 10450 classes); `coarse`: coarse_d1..d9;
- `leaf`: in21k_leaf, wordnet_leaf; `relabel`: leaf_hzr, p_hzr;
- `frequency`: tiny, small, base, large, huge, imbalanced_2k, centered_2k;
- `model_based`: clip_1k, dinov2_1k, sup_1k, random_1k, union_1k.
`source` resolves the base store (real features or the synthetic stand-in in `synthetic`),
`hierarchy` turns tree class maps into views with ancestor label sets, `cache` stores built
views on disk, `summary` describes a view (`python -m clusterbench benchmarks dataset=NAME`).
"""
