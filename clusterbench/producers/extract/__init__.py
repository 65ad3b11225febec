"""Feature extraction: an image folder -> a feature store, with any timm or open_clip backbone.

    python -m clusterbench extract extractor=NAME images.root=DIR store=OUT_DIR [overrides]

`models` turns an extractor spec (conf/extractor/*.yaml) into a network and its library's
preprocessing, `keymaps` loads checkpoints laid out differently from timm, `images` lists and
decodes the images, `writer` writes resumable shards and assembles the store, `run` drives it
with Lightning (`Trainer.predict`, DDP across GPUs and nodes).
"""
