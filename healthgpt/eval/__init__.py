"""Evaluation of HealthGPT against the paper's benchmarks, without Dagster.

- `registry`: the benchmarks, declared once (name, family, reader, scorer, table key).
- `normalize`: the answer normalization rules (one place), and LLaVA-Med's convention.
- `vqa`: VQA-RAD / SLAKE / PathVQA in the trained question form, strict and LLaVA-Med scores.
- `mcq`: multiple-choice parsing, MMMU (official scoring) and OmniMedVQA readers and scorers.
- `stats`: sample sizes and 95% intervals.
- `metrics`: SSIM, PSNR, MSE, LPIPS on stated conventions.
- `generation`: modality conversion / super-resolution / reconstruction runner and grid.
- `predict`: the `TextModel` / `ImageModel` protocols, prompts, batched greedy generation,
  the predictions table.
- `models`: which model to evaluate (checkpoint or official weights), via `healthgpt.model`.
- `report`: the paper's Tables 1-3 (and 9) with this run's numbers; `published.yaml` holds
  the published ones.
- `run`: one family's registered benchmarks end to end into its output directory (model built
  only when needed, `scores.json`, atomic swap), and the report files.
"""
