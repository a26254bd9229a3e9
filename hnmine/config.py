"""Parameter models, one per stage. CLI flags, config keys and keyword arguments share these names.

Fields listed in a model's `execution_only` change how fast a stage runs, not what it writes, so
they are left out of the manifest fingerprint: a rerun with a bigger batch size reuses the output.

Values are checked strictly: `top_k = true` or `top_k = "5"` in a config is an error naming the
key, not 1 or 5; only an int for a float field is taken as is. Paths may be given as strings and
lists as tuples (`strict=False` on those fields), conversions that cannot change a value's meaning.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hnmine.errors import HnmineError
from hnmine.index_names import check_index_name
from hnmine.prompts import DEFAULT_INSTRUCTION, DEFAULT_SYSTEM, DEFAULT_TEMPLATE


class StageParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    execution_only: ClassVar[frozenset[str]] = frozenset()

    def identity(self) -> dict:
        """The parameters that determine the output (what the manifest fingerprint hashes)."""
        return self.model_dump(mode="json", exclude=set(self.execution_only))


def parse_shard(shard: str | None) -> tuple[int, int]:
    """'K/N' (1-based K) -> (K-1, N); None -> (0, 1)."""
    if not shard:
        return 0, 1
    try:
        k, n = (int(part) for part in shard.split("/"))
    except ValueError:
        raise HnmineError(f"shard '{shard}' is not K/N", fix="write e.g. --shard 2/8") from None
    if n < 1 or not 1 <= k <= n:
        raise HnmineError(f"shard '{shard}' needs 1 <= K <= N", fix="write e.g. --shard 2/8")
    return k - 1, n


class DataParams(StageParams):
    """Where the corpus, queries and labels come from: a BEIR folder, separate files, or pairs."""

    beir: Path | None = Field(None, strict=False, description="BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/SPLIT.tsv)")
    split: str = Field("test", description="qrels split of the BEIR folder")
    corpus: Path | None = Field(None, strict=False, description="corpus file (jsonl/parquet/csv/tsv); with --pairs, extra documents")
    queries: Path | None = Field(None, strict=False, description="queries file (jsonl/parquet/csv/tsv)")
    qrels: Path | None = Field(None, strict=False, description="qrels file (TSV query-id, corpus-id, score; or TREC)")
    pairs: Path | None = Field(None, strict=False, description="pairs file: a query column and one or more positive columns")
    id_column: str = Field("_id", description="corpus id column")
    text_column: str = Field("text", description="corpus text column")
    title_column: str = Field("title", description="corpus title column (skipped when absent)")
    query_id_column: str = Field("_id", description="queries id column")
    query_text_column: str = Field("text", description="queries text column")
    query_column: str = Field("query", description="pairs: query column")
    positive_columns: list[str] = Field(["positive"], strict=False, description="pairs: positive column(s); a list cell is several positives")
    min_relevance: float = Field(1.0, description="qrels score at or above which a document is a positive")
    on_unknown_ids: Literal["error", "skip"] = Field("error", description="qrels naming unknown ids: error, or skip (counted)")

    def check(self) -> None:
        sources = [name for name in ("beir", "pairs") if getattr(self, name) is not None]
        if self.queries is not None or self.qrels is not None:
            sources.append("queries/qrels")
        if len(sources) > 1:
            raise HnmineError(f"give one input, not {' and '.join(sources)}", fix="use --beir, or --corpus with --queries/--qrels, or --pairs")
        if not sources and self.corpus is None:
            raise HnmineError("no input given", fix="use --beir DIR, or --corpus with --queries and --qrels, or --pairs FILE")
        if sources == ["queries/qrels"] and (self.queries is None or self.qrels is None or self.corpus is None):
            raise HnmineError("--queries and --qrels go together with --corpus", fix="give all three, or use --beir / --pairs")


class IndexParams(StageParams):
    execution_only: ClassVar[frozenset[str]] = frozenset({"batch_size", "batch_tokens", "chunk_size", "device", "devices"})

    retrievers: list[Literal["dense", "bm25"]] = Field(["dense"], strict=False, description="indexes to build: dense, bm25 (repeat for both)")
    name: str = Field("", description="a name for this dense index: it goes to index/dense/NAME/ beside the default "
                                      "index/dense/, so several models share one work dir (mine --retriever pooled)")
    model: str = Field("all-MiniLM-L6-v2", description="sentence-transformers model: local path or hub name")
    query_prompt: str = Field("", description="text put before every query when encoding")
    document_prompt: str = Field("", description="text put before every document when encoding")
    max_length: int | None = Field(None, description="max tokens per text (default: the model's)")
    batch_size: int = Field(32, ge=1, description="encoding batch size")
    batch_tokens: int | None = Field(None, ge=1, description="GPU encoding: batches of at most this many padded tokens "
                                     "(rows x longest row), up to 8x --batch-size rows (default: --batch-size rows)")
    chunk_size: int = Field(2048, ge=1, description="documents per saved chunk (the resume granularity)")
    device: str | None = Field(None, description="torch device: cpu, cuda, cuda:1 (default: cuda when present)")
    devices: list[str] | None = Field(
        None, strict=False, description="encode the corpus on several devices at once, one process each (cuda:0 cuda:1 ...); "
                          "default: every visible GPU when there are several and --device is not given")
    normalize: bool = Field(True, description="L2-normalise embeddings (inner product = cosine)")
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="encoding runtime: auto (ONNX Runtime on CPU when the model allows, else torch), torch, onnx")
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto", description="encoding precision: auto (fp16 on a GPU, fp32 on a CPU), fp32, fp16, bf16, or int8 (ONNX "
                            "Runtime on a CPU, quantized weights: faster, vectors at cosine ~0.99 to fp32)")
    faiss_factory: str = Field("Flat", description="FAISS index factory string: Flat (exact), HNSW32, IVF1024,PQ32 ...")
    recall_sample: int = Field(1000, ge=0, description="approximate indexes: recall@10 against exact search on this "
                                                       "many sampled corpus vectors, printed at the end of index (0 = off)")
    storage: Literal["float32", "float16"] = Field("float32", description="dtype of the saved embeddings: float16 "
                                                   "halves disk and page cache (search converts blocks to float32)")
    embeddings: Path | None = Field(None, strict=False, description="precomputed corpus embeddings instead of encoding: "
                                    "a .npy (one row per corpus document, in corpus order) or a Parquet file with an id "
                                    "column and a vector column (--model still encodes the queries: use the model that made them)")
    embeddings_id_column: str = Field("_id", description="Parquet embeddings: the document id column")
    embeddings_column: str = Field("embedding", description="Parquet embeddings: the vector column (list of floats)")
    bm25_method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = Field("lucene", description="BM25 variant")
    bm25_k1: float = Field(1.2, description="BM25 k1")
    bm25_b: float = Field(0.75, description="BM25 b")
    bm25_stemmer: str = Field("english", description="Snowball stemmer language, or 'none'")
    bm25_stopwords: str = Field("en", description="stopword list for BM25 ('en', or 'none')")

    _check_name = field_validator("name")(lambda v: (check_index_name(v), v)[1])


class MineParams(StageParams):
    execution_only: ClassVar[frozenset[str]] = frozenset({"batch_size", "device", "row_workers"})

    retriever: Literal["dense", "bm25", "hybrid", "pooled"] = Field(
        "dense", description="dense, bm25, hybrid (reciprocal-rank fusion of the two), or pooled (fusion of --pool)")
    pool: list[str] = Field([], strict=False, description="pooled: the retrievers fused, any of dense (the default index), "
                                                         "bm25 and named dense indexes (hnmine index --name); one alone ranks by itself")
    top_k: int = Field(50, ge=1, description="candidates kept per query, known positives excluded")
    rrf_k: int = Field(60, ge=1, description="hybrid, pooled: reciprocal-rank-fusion constant")
    nprobe: int = Field(16, ge=1, description="FAISS IVF indexes: lists searched per query")
    ef_search: int = Field(128, ge=1, description="FAISS HNSW indexes: search breadth")
    exclude_qrels: Path | None = Field(
        None, strict=False, description="evaluation qrels: their queries (by id or normalized text) never become "
                                        "training queries, and their positives stay out of training (--exclude-documents)")
    exclude_queries: Path | None = Field(
        None, strict=False, description="the evaluation queries file, to match by text (default: the training queries "
                                        "file's entries for the --exclude-qrels ids)")
    exclude_documents: Literal["all", "negatives", "none"] = Field(
        "all", description="evaluation positives: kept out of training negatives and positives (all), of negatives "
                           "only, or kept (none)")
    batch_size: int = Field(256, ge=1, description="queries per search batch")
    device: str | None = Field(None, description="torch device for query encoding")
    row_workers: int | None = Field(None, ge=0, description="processes building candidate rows beside the search (0: none; default: 1 per 4 cores, up to 4, from 4 batches, unsharded)")
    shard: str | None = Field(None, description="K/N: mine only the K-th of N query shards")

    _check_shard = field_validator("shard")(lambda v: (parse_shard(v), v)[1])

    @model_validator(mode="after")
    def _pool_goes_with_pooled(self) -> MineParams:
        if self.retriever != "pooled":
            if self.pool:
                raise ValueError("--pool goes with --retriever pooled (fix: add --retriever pooled, or drop --pool)")
            return self
        if not self.pool or len(set(self.pool)) != len(self.pool):
            raise ValueError(f"--retriever pooled needs one or more different --pool entries, not {self.pool} "
                             "(fix: e.g. --pool NAME, or --pool dense --pool bm25 --pool NAME)")
        for entry in self.pool:
            if entry not in ("dense", "bm25"):
                check_index_name(entry)
        return self

    def retriever_names(self) -> list[str]:
        """The retrievers this run searches, by their pool names (dense, bm25 or an index name)."""
        return {"dense": ["dense"], "bm25": ["bm25"], "hybrid": ["dense", "bm25"]}.get(self.retriever, self.pool)

    @model_validator(mode="after")
    def _queries_go_with_qrels(self) -> MineParams:
        if self.exclude_queries is not None and self.exclude_qrels is None:
            raise ValueError("--exclude-queries goes with --exclude-qrels (fix: add the evaluation qrels)")
        return self


class ScoreParams(StageParams):
    execution_only: ClassVar[frozenset[str]] = frozenset(
        {"batch_size", "device", "chunk_size", "concurrency", "timeout", "max_retries", "api_key_env", "base_url"})

    scorer: Literal["none", "cross-encoder", "judge"] = Field(
        "none", description="none: keep the retriever scores; cross-encoder; judge (an LLM's P(yes))")
    top: int | None = Field(30, ge=0, description="score candidates ranked 1..top (positives always); 0 = all")
    model: str = Field("ms-marco-MiniLM-L-12-v2",
                       description="cross-encoder: a CrossEncoder path or hub name, or an .onnx file with --backend onnx")
    backend: Literal["torch", "onnx"] = Field("torch", description="cross-encoder runtime: torch, or onnx (ONNX Runtime)")
    max_length: int = Field(512, ge=8, description="max tokens per (query, document) pair")
    batch_size: int = Field(32, ge=1, description="pairs per model batch (an int8 ONNX cross-encoder, such as the "
                                                  "packaged one, scores pairs one by one: its scores would depend on the batch)")
    device: str | None = Field(None, description="torch device (default: cuda when present)")
    chunk_size: int = Field(256, ge=1, description="pairs per saved cache chunk (the resume granularity)")
    judge_backend: Literal["local", "http"] = Field("local", description="judge: local (transformers) or http (OpenAI-compatible)")
    judge_model: str = Field("SmolLM2-135M-Instruct", description="judge: local model path/name, or the served model name")
    judge_mode: Literal["yes-no", "query-likelihood"] = Field(
        "yes-no", description="judge: yes-no (P(yes)/(P(yes)+P(no)) after the prompt) or query-likelihood (local "
                              "only: how likely the model finds the query after the document; works with small models)")
    base_url: str | None = Field(None, description="judge http: endpoint base URL, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="judge http: environment variable holding the API key")
    concurrency: int = Field(8, ge=1, description="judge http: requests in flight")
    timeout: float = Field(60.0, gt=0, description="judge http: seconds per request")
    max_retries: int = Field(6, ge=0, description="judge http: retries on 429, 5xx and dropped connections")
    system_prompt: str = Field(DEFAULT_SYSTEM, description="judge: system message")
    prompt_template: str = Field(DEFAULT_TEMPLATE, description="judge: user message with {query}, {document}, {instruction}")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="judge: task instruction put into the template")
    cascade: Literal["none", "judge"] = Field(
        "none", description="with the cross-encoder: also run the judge (the judge options) on the band below and every "
                            "positive; `decided_by` and `decided_prob` say which teacher decided each candidate")
    cascade_margin: float | None = Field(None, description="cascade band: candidates whose ce_logit is at least the "
                                                           "query's lowest positive's minus this")
    cascade_top: int | None = Field(None, ge=1, description="cascade band: each query's top m candidates by ce_logit")
    shard: str | None = Field(None, description="K/N: score only the K-th of N query shards")

    @model_validator(mode="after")
    def _cascade_has_a_band(self) -> ScoreParams:
        if self.cascade != "none" and self.scorer != "cross-encoder":
            raise ValueError("--cascade judge follows the cross-encoder (fix: pass --scorer cross-encoder)")
        if self.cascade != "none" and self.cascade_margin is None and self.cascade_top is None:
            raise ValueError("--cascade judge needs a band (fix: pass --cascade-margin M and/or --cascade-top N)")
        if self.cascade != "none" and self.judge_backend == "http" and not self.base_url:
            raise ValueError("the cascade's http judge needs a base URL (fix: pass --base-url http://HOST:PORT/v1)")
        return self

    def identity(self) -> dict:
        identity = {"scorer": self.scorer_identity(), "top": self.top if self.scorer != "none" else None, "shard": self.shard}
        if self.cascade == "none":
            return identity
        return identity | {"cascade": {"judge": self.judge().scorer_identity(), "margin": self.cascade_margin,
                                       "top": self.cascade_top}}

    def judge(self) -> ScoreParams:
        """The cascade's second scorer: the same options with the judge as the scorer."""
        return self.model_copy(update={"scorer": "judge", "cascade": "none"})

    def scorer_identity(self) -> dict:
        """What determines a score (the cache key's first part)."""
        if self.scorer == "cross-encoder":
            identity = {"scorer": self.scorer, "model": self.model, "backend": self.backend, "max_length": self.max_length}
            # the key marks ONNX scores batch-invariant (OnnxCrossEncoder runs pairs alone): scores a batched run cached are not reused
            return identity | ({"batch_invariant": True} if self.backend == "onnx" else {})
        if self.scorer == "judge":
            if self.judge_mode == "query-likelihood":
                return {"scorer": self.scorer, "backend": self.judge_backend, "model": self.judge_model,
                        "mode": self.judge_mode, "max_length": self.max_length}
            return {"scorer": self.scorer, "backend": self.judge_backend, "model": self.judge_model,
                    "system": self.system_prompt, "template": self.prompt_template, "instruction": self.instruction,
                    "max_length": self.max_length}
        return {"scorer": "none"}


class FilterParams(StageParams):
    rank_min: int = Field(1, ge=1, description="first candidate rank that may be a negative (skip the top ranks-1)")
    rank_max: int | None = Field(None, ge=1, description="last candidate rank that may be a negative (default: all)")
    score: str = Field("auto", description="score column the score rules compare: auto (ce_logit, else judge_score, "
                                           "else dense_score, else bm25_score), or a column name")
    reference_positive: Literal["min", "max", "mean"] = Field(
        "min", description="which of a query's positive scores the positive-aware rules compare with")
    max_relative: float | None = Field(
        None, gt=0, description="keep a negative only if its score < p x the positive's (TopK-PercPos; 0.95 typical); "
                                "for a negative positive score, < pos - (1-p)|pos|")
    margin: float | None = Field(None, description="keep a negative only if its score < the positive's - margin")
    max_score: float | None = Field(None, description="drop candidates scoring above this")
    min_score: float | None = Field(None, description="drop candidates scoring below this (too easy)")
    max_probability: float | None = Field(
        None, ge=0, le=1, description="RocketQA: drop candidates whose probability (ce_prob or judge_score) exceeds this")
    likely_positive: float | None = Field(
        None, ge=0, le=1, description="RocketQA denoising: mark candidates whose probability (ce_prob or judge_score) "
                                      "is at or above this as likely positives, whatever their rank; they are never "
                                      "negatives, and `export --extra-positives` adds them as positives (0.9 typical)")
    near_duplicate: float = Field(
        0.95, ge=0, le=1, description="drop a candidate whose embedding cosine to any of the query's positives is at "
                                      "or above this (needs the dense index; 0 = off)")
    duplicate_negatives: float = Field(
        0.95, ge=0, le=1, description="drop a negative whose embedding cosine to a negative already chosen for the "
                                      "query is at or above this, so the n negatives are n different documents "
                                      "(needs the dense index; 0 = off)")
    short_queries: Literal["keep", "drop", "pad"] = Field(
        "keep", description="queries with fewer than num_negatives survivors: keep them with fewer, drop them, or "
                            "pad with seeded random corpus documents (never a positive, never a repeat)")
    num_negatives: int = Field(5, ge=1, description="negatives kept per query")
    sampling: Literal["top", "random", "lowest-score"] = Field(
        "top", description="top: the best-ranked survivors; random: a seeded sample; lowest-score: the survivors the "
                           "--score column (the teacher: cross-encoder or judge) rates least relevant, i.e. hard for "
                           "the retriever (inside the rank window) yet clearly negative for the teacher")
    seed: int = Field(42, description="seed for random sampling")
    shard: str | None = Field(None, description="K/N: filter only the K-th of N query shards")

    @model_validator(mode="after")
    def _rank_window_is_not_empty(self) -> FilterParams:
        if self.rank_max is not None and self.rank_min > self.rank_max:
            raise ValueError(f"rank_min {self.rank_min} is more than rank_max {self.rank_max}, so no candidate is "
                             "in the rank window (fix: make rank_min at most rank_max)")
        return self


# the distillation labels each export format can carry (a value it cannot is refused, never ignored)
EXPORT_LABELS = {"triplet": ("margin", "scores"), "n-tuple": ("margin", "scores"), "labeled-pair": ("scores",),
                 "labeled-list": ("scores",), "flagembedding": ("scores",), "tevatron": ("scores",),
                 "tevatron-ids": (), "ids": ("scores",), "beir-subset": ()}


class ExportParams(StageParams):
    format: Literal["triplet", "n-tuple", "labeled-pair", "labeled-list", "flagembedding", "tevatron", "tevatron-ids",
                    "ids", "beir-subset"] = Field(
        "n-tuple", description="triplet, n-tuple, labeled-pair, labeled-list (sentence-transformers Parquet); "
                               "flagembedding, tevatron (JSONL with texts); tevatron-ids (JSONL of ids plus a corpus "
                               "file); ids (Parquet of ids only); beir-subset (a BEIR folder for fast evaluation: "
                               "the queries, their positives and the pooled candidates)")
    output: Path | None = Field(None, strict=False, description="file to write (default: WORKDIR/export/FORMAT.parquet, "
                                                                 ".jsonl for the JSONL formats)")
    labels: Literal["none", "margin", "scores"] = Field(
        "none", description="distillation labels: margin (positive - negative score, for MarginMSE; triplet, n-tuple) "
                            "or scores (the positive's and each negative's, for KL); labeled-* take the scores as "
                            "labels, tevatron writes each passage's `score`")
    score: str = Field("auto", description="score column the labels come from: auto (ce_logit, judge_score, "
                                           "dense_score, bm25_score: the first present) or a column name")
    prompt: str = Field("", description="flagembedding: the query instruction written into each row's `prompt`")
    extra_positives: bool = Field(
        False, description="add the candidates `filter --likely-positive` marked as extra positives of their query "
                           "(RocketQA's denoised positives); the ids files say which positives came from labels")

    batch_plan: Literal["none", "no-false-negatives", "clustered"] = Field(
        "none", description="order the rows into batches of --batch-size for in-batch-negative losses (MNRL): "
                            "no-false-negatives puts no row beside a row whose query one of its documents is a "
                            "known or likely positive (or a near duplicate of one) of; clustered also draws each "
                            "batch from one k-means cluster of similar positives (harder in-batch negatives). "
                            "The ids file gets a `batch` column; hnmine.exports.sampler feeds the plan to the trainer")
    batch_size: int | None = Field(None, ge=2, description="rows per planned batch (the trainer's batch size)")
    batch_near_duplicate: float = Field(0.95, description="batch plans: a document at this cosine to a query's positive "
                                                          "counts as a positive of it (needs the dense index; 0 = off)")
    seed: int = Field(42, description="seed of the batch plan and of a beir-subset's random documents")
    subset_depth: int | None = Field(None, ge=1, description="beir-subset: the candidates within this rank of any "
                                                             "retriever (default: all that mine kept)")
    subset_min_documents: int = Field(0, ge=0, description="beir-subset: seeded random corpus documents added until "
                                                           "the subset holds this many")

    @model_validator(mode="after")
    def _plan_has_what_it_needs(self) -> ExportParams:
        if self.batch_plan != "none":
            if self.format not in ("n-tuple", "triplet"):
                raise ValueError(f"--batch-plan is for the in-batch-negative formats n-tuple and triplet, not "
                                 f"{self.format} (fix: --format n-tuple)")
            if self.batch_size is None:
                raise ValueError("--batch-plan needs --batch-size (fix: give the trainer's batch size, e.g. "
                                 "--batch-size 32)")
        elif self.batch_size is not None:
            raise ValueError("--batch-size only shapes a --batch-plan (fix: add --batch-plan no-false-negatives, or "
                             "drop --batch-size)")
        return self

    @model_validator(mode="after")
    def _format_carries_labels(self) -> ExportParams:
        carried = EXPORT_LABELS[self.format]
        if self.labels != "none" and self.labels not in carried:
            why = {"tevatron-ids": "drop --labels (Tevatron's id format reads scores from the corpus, one per "
                                   "document, not per query; --format tevatron carries per-passage scores)",
                   "beir-subset": "drop --labels (an evaluation folder has qrels, not training labels)"}
            fix = f"use --labels {carried[0]}" if carried else why[self.format]
            raise ValueError(f"--format {self.format} cannot carry --labels {self.labels} (fix: {fix})")
        return self

    @model_validator(mode="after")
    def _options_the_format_uses(self) -> ExportParams:
        unused = []
        if self.prompt and self.format != "flagembedding":
            unused.append("--prompt (flagembedding only)")
        if self.extra_positives and self.format == "beir-subset":
            unused.append("--extra-positives (an evaluation folder keeps the labeled positives only)")
        if self.format != "beir-subset" and (self.subset_depth is not None or self.subset_min_documents):
            unused.append("--subset-depth / --subset-min-documents (beir-subset only)")
        if unused:
            raise ValueError(f"--format {self.format} does not use {', '.join(unused)} (fix: drop it, or choose the "
                             "format it is for)")
        return self

    def identity(self) -> dict:
        """The options that shape this format's output: a plain export is not rerun for a changed
        batch-plan or subset option it does not use."""
        params = super().identity()
        if self.batch_plan == "none":
            for key in ("batch_size", "batch_near_duplicate"):
                params.pop(key)
        if self.format != "beir-subset":
            for key in ("subset_depth", "subset_min_documents"):
                params.pop(key)
        if self.batch_plan == "none" and self.format != "beir-subset":
            params.pop("seed")
        return params


# the filter options `hnmine calibrate` can calibrate (FilterParams fields with a threshold rule)
Calibratable = Literal["rank_min", "margin", "max_relative", "max_probability", "max_score", "near_duplicate"]


class CalibrateParams(StageParams):
    """`hnmine calibrate`: which thresholds to calibrate, and how many queries should stay full."""

    target_full: float = Field(0.9, gt=0, le=1, description="share of queries that should keep num_negatives negatives; "
                                                            "calibrate suggests the strictest value that does")
    options: list[Calibratable] = Field(["rank_min", "margin", "max_relative", "max_probability"], strict=False,
                                        min_length=1, description="filter thresholds to calibrate; one whose inputs "
                                                                  "the run lacks is listed as not calibrated")


def validation_message(error: dict) -> str:
    """A pydantic error's message, without the "Value error, " that pydantic puts before a validator's own."""
    return error["msg"].removeprefix("Value error, ")
