"""PairSplit: a small network that separates two chromosomes the segmenter returned as one
detection (touching, or crossing where the crossing belongs to both), for cluster resolution
(karyoflow.clusters).

- `crops`: a detection as the network sees it (its pixels, background zeroed, letterboxed to a
  square) and the way back to image pixels;
- `examples`: training examples composed from single-chromosome images (ICIs): crossing and
  touching pairs, and single chromosomes that must stay whole;
- `model`: the network (a small U-Net with two mask outputs);
- `train`: `karyo train pairsplit`;
- `predictor`: the pair of masks it proposes for a detection.
"""
