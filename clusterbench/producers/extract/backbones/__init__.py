"""Backbones: an extractor spec (`conf/extractor/*.yaml`) -> feature network + preprocessing.

build.py      `build_backbone` and `resolve_weights`: checks the spec, dispatches on its library
backbone.py   `Backbone`, what every library's builder returns, and the helpers filling its info
timm.py       timm models: pretrained tags, cached weights, `pre_logits` / `cls` features
open_clip.py  open_clip models: `encode_image` features and the tag's validation transform
hub_cache.py  finding a pretrained file in the local Hugging Face cache (timm and open_clip)
keymaps.py    checkpoints laid out differently from timm's names, loaded into timm models

Callers import each name from the module that defines it; this package re-exports nothing.
"""
