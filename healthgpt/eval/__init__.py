"""Evaluation of HealthGPT against the paper's benchmarks, without Dagster.

- `normalize`: the answer normalization rules (one place).
- `vqa`: VQA-RAD / SLAKE / PathVQA scoring (closed accuracy, open recall) and runner.
- `mcq`: multiple-choice parsing, MMMU and OmniMedVQA readers, runner.
- `metrics`: SSIM, PSNR, MSE, LPIPS on stated conventions.
- `generation`: modality conversion / super-resolution / reconstruction runner and grid.
- `predict`: the `TextModel` / `ImageModel` protocols, prompts, batched greedy generation,
  the predictions table.
- `models`: which model to evaluate (checkpoint or official weights), via `healthgpt.model`.
- `report`: the paper's Tables 1-3 (and 9) with this run's numbers; `published.yaml` holds
  the published ones.
- `run`: one family end to end into its output directory (model built only when needed,
  `scores.json`, atomic swap), and the report file.
"""
