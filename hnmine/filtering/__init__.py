"""Choosing negatives from scored candidates: the filter rules (`rules`), the embedding checks
(`similarity`), the sampling order and padding (`sampling`), and the runner that applies them in
charge order (`runner`). The `filter` stage and `hnmine audit` both read these."""
