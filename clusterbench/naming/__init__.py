"""Names for the clusters of a finished run, from a vision-language text space (`clusterbench
name RUN_DIR`, conf/name.yaml), scored against the WordNet tree where the run has labels.

- `vocabulary`: the candidate names (WordNet nouns of the ImageNet-21K tree, the view's
  classes or a user's file) and their text embeddings (the zero-shot producer's text side);
- `votes`: every row's nearest name, counted per cluster in a sparse table;
- `unique`: unique names by an assignment over each cluster's top candidates;
- `score`: exact, ancestor/descendant and Wu-Palmer scores on the shipped tree;
- `run`: the command (names.parquet, results.json).
"""
