"""distinct-n: unique word n-grams over all word n-grams, pooled across every output.

    distinct_n = |{n-grams of all outputs}| / sum over outputs of (#n-grams of the output)

Words are lower-cased whitespace tokens, as in the paper's Reddit evaluation. An output shorter
than n contributes no n-grams; if no output has any, the score is 0 (not a division by zero).
Load by path (works offline): evaluate.load("<repo>/alol_min/metrics/distinct_n").
"""

import datasets
import evaluate

_DESCRIPTION = "Unique n-grams over total n-grams across all predictions (distinct-1/2/3)."
_KWARGS = "predictions: list of str; max_n: int, default 3."


class DistinctN(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, max_n=3):
        scores = {}
        for n in range(1, max_n + 1):
            unique, total = set(), 0
            for text in predictions:
                words = text.lower().split()
                grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
                unique.update(grams)
                total += len(grams)
            scores[f"distinct_{n}"] = len(unique) / total if total else 0.0
        return scores
