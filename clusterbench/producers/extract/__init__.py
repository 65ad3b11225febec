"""Feature extraction: an image folder -> a feature store, with any timm or open_clip backbone.

    python -m clusterbench extract extractor=NAME images.root=DIR store=OUT_DIR [overrides]

backbones   an extractor spec (conf/extractor/*.yaml) -> a network and its library's
            preprocessing (`backbones.build`; timm, open_clip, and `backbones.keymaps` for
            checkpoints laid out differently from timm)
images      lists and decodes the images
datamodule  the Lightning data side: each rank's pending shards, batches within a shard
workdir     the work directory: plan, shards, manifests, and what of it may be deleted
lock        one extraction at a time per work directory (and store)
writer      writes resumable shards and assembles the store
settings    the type check of the command's scalar settings
run         drives it with Lightning (`Trainer.predict`, DDP across GPUs and nodes)

Only what extraction made is ever deleted or replaced: a work directory it created (its
marker or plan), a store whose meta.json it wrote (`made_by`); anything else is refused.
"""
