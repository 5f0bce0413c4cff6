-- Tokenization-efficiency analytics over committed tokenmill outputs (DuckDB), version 1.
--
-- pipeline/analytics/ (sql.py) registers the raw relations and then runs every section below in order:
--   _outputs   one row per (output, tokenizer fingerprint): dataset_id, output, tokenizer (label),
--              tokenizer_kind, tokenizer_name, tokenizer_fingerprint, vocab_size, base_vocab_size
--   _shards    every committed shard row: dataset_id, unit_id, doc_id, source, lang,
--              tokens UINTEGER[], n_tokens, n_bytes, n_chars, n_words, n_continued_words,
--              token_offsets UINTEGER[] (NULL when not written), plus plugin columns
--              (batch_id, ...)
--   _ledger, _rejects, _runs, _merge_batches   ledger entries, reject rows, run summaries and
--              dynamic-merge batch statistics (empty when no output has them)
-- Placeholders (replaced by Python with quoted identifiers or SQL built from them only): {keys},
-- {d_keys}, {join_u}, {documents}, {based}, {unigram_stats}, {group}, {counts}.
-- Values (baseline tokenizer, Renyi alpha) are DuckDB
-- variables, never text.

-- name: views
CREATE OR REPLACE VIEW documents AS
SELECT o.output, o.tokenizer, o.tokenizer_kind, o.tokenizer_name, o.tokenizer_fingerprint,
       o.vocab_size, s.* EXCLUDE (tokens, token_offsets)
FROM _shards s JOIN _outputs o USING (dataset_id);

CREATE OR REPLACE VIEW tokens AS
SELECT o.output, o.tokenizer,
       s.* EXCLUDE (tokens, token_offsets, n_tokens, n_bytes, n_chars, n_words, n_continued_words),
       unnest(s.tokens) AS token_id,
       unnest(range(len(s.tokens))) AS position
FROM _shards s JOIN _outputs o USING (dataset_id);

CREATE OR REPLACE VIEW units AS SELECT * FROM _ledger;
CREATE OR REPLACE VIEW rejects AS SELECT * FROM _rejects;
CREATE OR REPLACE VIEW runs AS SELECT * FROM _runs;

CREATE OR REPLACE VIEW merge_batches AS
SELECT o.output, o.tokenizer, m.* EXCLUDE (dataset_id),
       100.0 * (m.l0 - m.lm) / nullif(m.l0 - m.lword, 0) AS reduction_pct,
       100.0 * (m.l0 - m.lm) / nullif(m.l0, 0) AS absolute_reduction_pct
FROM _merge_batches m JOIN _outputs o USING (dataset_id);

-- Token counts per (dataset, source, language, token id): the unigram model of each group.
CREATE OR REPLACE VIEW unigram_counts AS
SELECT dataset_id, source, lang, token_id, count(*) AS n
FROM (SELECT dataset_id, source, lang, unnest(tokens) AS token_id FROM _shards)
GROUP BY ALL;

-- name: unigram_stats
-- Unigram statistics per {group} from token counts n ({counts}: one row per group and token), in
-- one pass and no window: with N = sum(n) and S = sum(n ln n), the entropy is H = ln N - S / N, the
-- Renyi entropy H_a = (ln sum(n^a) - a ln N) / (1 - a), the unigram code length (N ln N - S) / ln 2.
SELECT {group},
       count(*) AS types,
       greatest(ln(sum(n)) - sum(n * ln(n)) / sum(n), 0.0) AS entropy,
       greatest((ln(sum(pow(n, coalesce(getvariable('renyi_alpha'), 2.5)::DOUBLE))) -
                 coalesce(getvariable('renyi_alpha'), 2.5)::DOUBLE * ln(sum(n))) /
                (1 - coalesce(getvariable('renyi_alpha'), 2.5)::DOUBLE), 0.0) AS renyi_entropy,
       greatest(sum(n) * ln(sum(n)) - sum(n * ln(n)), 0.0) / ln(2) AS unigram_bits
FROM {counts}
GROUP BY ALL

-- name: metrics
-- One row per tokenizer x {keys}. Definitions: docs/analytics.md and ALGORITHMS.md section 5.
WITH based AS (
    {based}
),
docs AS (
    SELECT tokenizer{keys},
           count(*) AS documents,
           sum(n_bytes)::BIGINT AS bytes,
           sum(n_chars)::BIGINT AS chars,
           sum(n_words)::BIGINT AS words,
           sum(n_tokens)::BIGINT AS tokens,
           (sum(n_tokens) FILTER (WHERE n_words IS NOT NULL))::BIGINT AS tokens_words_known,
           sum(n_continued_words)::BIGINT AS continued_words,
           (sum(n_words) FILTER (WHERE n_continued_words IS NOT NULL))::BIGINT AS words_split_known,
           quantile_cont(n_tokens, [0.5, 0.9, 0.99]) AS length_quantiles,
           max(n_tokens)::BIGINT AS max_tokens,
           CASE WHEN getvariable('baseline') IS NOT NULL THEN count(base_tokens) END
               AS baseline_documents,
           (sum(n_tokens) FILTER (WHERE base_tokens IS NOT NULL))::DOUBLE /
               nullif(sum(base_tokens), 0) AS normalized_length
    FROM based
    GROUP BY ALL
),
unigram AS (
    {unigram_stats}
),
vocab AS (
    SELECT tokenizer, max(vocab_size) AS vocab_size FROM _outputs GROUP BY ALL
)
SELECT d.tokenizer{d_keys},
       d.documents, d.bytes, d.chars, d.words, d.tokens,
       d.tokens_words_known / nullif(d.words, 0) AS fertility,
       d.continued_words / nullif(d.words_split_known, 0) AS continued_word_share,
       d.bytes / nullif(d.tokens, 0) AS bytes_per_token,
       d.chars / nullif(d.tokens, 0) AS chars_per_token,
       d.normalized_length,
       d.baseline_documents,
       v.vocab_size,
       coalesce(u.types, 0) AS types,
       u.entropy / ln(v.vocab_size) AS shannon_efficiency,
       u.entropy / nullif(ln(u.types), 0) AS shannon_efficiency_observed,
       u.renyi_entropy / ln(v.vocab_size) AS renyi_efficiency,
       u.renyi_entropy / nullif(ln(u.types), 0) AS renyi_efficiency_observed,
       u.unigram_bits / nullif(d.bytes, 0) AS bits_per_byte,
       coalesce(u.types, 0) / v.vocab_size AS vocab_share,
       u.types * 1e6 / nullif(d.tokens, 0) AS types_per_million,
       d.length_quantiles[1] AS p50_tokens, d.length_quantiles[2] AS p90_tokens,
       d.length_quantiles[3] AS p99_tokens, d.max_tokens
FROM docs d
JOIN vocab v USING (tokenizer)
LEFT JOIN unigram u ON u.tokenizer = d.tokenizer{join_u}
ORDER BY d.tokenizer{d_keys}

-- name: merge_summary
SELECT output, tokenizer,
       count(*) AS batches,
       sum(l0)::BIGINT AS l0, sum(lm)::BIGINT AS lm, sum(lword)::BIGINT AS lword,
       100.0 * (sum(l0) - sum(lm)) / nullif(sum(l0) - sum(lword), 0) AS reduction_pct,
       100.0 * (sum(l0) - sum(lm)) / nullif(sum(l0), 0) AS absolute_reduction_pct
FROM merge_batches
GROUP BY ALL
ORDER BY tokenizer, output

-- name: based
-- Documents with the baseline tokenizer's token count of the same document (NULL where it has
-- none): the same doc_id, source (a record's own, else its file's name) and text bytes, a key
-- whose baseline documents all have one token count (held once, or the same document in two
-- outputs of the baseline). Ids may repeat across input files (per-file row numbers): joined on
-- doc_id alone, each such document took an arbitrary one's count.
SELECT d.*, b.base_tokens
FROM {documents} d
LEFT JOIN (
    SELECT doc_id, source, n_bytes, min(n_tokens) AS base_tokens
    FROM {documents}
    WHERE tokenizer = getvariable('baseline')
    GROUP BY doc_id, source, n_bytes
    HAVING min(n_tokens) = max(n_tokens)
) b ON b.doc_id = d.doc_id AND b.source IS NOT DISTINCT FROM d.source AND b.n_bytes = d.n_bytes

-- name: length_histogram
-- Document lengths in tokens, in power-of-two bins: bin b holds lengths in [2^b, 2^(b+1)).
SELECT tokenizer, lang,
       CASE WHEN n_tokens = 0 THEN -1 ELSE floor(log2(n_tokens))::INTEGER END AS bin,
       count(*) AS documents
FROM {documents}
GROUP BY ALL
ORDER BY tokenizer, lang, bin
