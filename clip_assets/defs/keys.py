"""Every asset key of the code location, defined once; assets, checks, jobs and tests import them from here."""

import dagster as dg

RAW_PAIRS = dg.AssetKey("raw_pairs")
REJECTED_PAIRS = dg.AssetKey("rejected_pairs")
CATALOG = dg.AssetKey("catalog")
CONTRASTIVE_MODEL = dg.AssetKey("contrastive_model")
EMBEDDINGS = dg.AssetKey("embeddings")
REFERENCE_SET = dg.AssetKey("reference_set")
PAIR_SCORES = dg.AssetKey("pair_scores")
KL_STATS = dg.AssetKey("kl_stats")
SCORE_CALIBRATION = dg.AssetKey("score_calibration")
CURATED_SUBSETS = dg.AssetKey("curated_subsets")
CURATION_REPORT = dg.AssetKey("curation_report")
NGRAM_ANALYSIS = dg.AssetKey("ngram_analysis")
IMPORTANCE_WEIGHTS = dg.AssetKey("importance_weights")
IWL_MODEL = dg.AssetKey("iwl_model")
BASELINE_MODEL = dg.AssetKey("baseline_model")
IWL_EVAL = dg.AssetKey("iwl_eval")

# Every warehouse table with a view in sql/views: the catalog is rebuilt after any of them changes.
CATALOG_TABLES = [RAW_PAIRS, REJECTED_PAIRS, PAIR_SCORES, KL_STATS, SCORE_CALIBRATION, IMPORTANCE_WEIGHTS,
                  CURATED_SUBSETS, CURATION_REPORT, NGRAM_ANALYSIS]
