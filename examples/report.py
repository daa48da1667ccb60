"""Assemble docs/results.md from the examples' results.json files and copy their figures into docs/img/.

    python examples/report.py [--runs runs/examples] [--docs docs]

Only full runs are used (a results.json written with --quick is refused).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from _common import table

SECTIONS = {
    "mlp_vae": ("1. The classic MLP VAE", "python examples/mlp_vae.py"),
    "latent_dim_ablation": ("2. Latent size ablation", "python examples/latent_dim_ablation.py"),
    "latent_manifold": ("3. Latent manifolds (z = 1 and z = 2)", "python examples/latent_manifold.py"),
    "cvae": ("4. Conditional generation (CVAE)", "python examples/cvae.py"),
    "conv_vae": ("5. Conv VAE under three likelihoods", "python examples/conv_vae.py"),
    "anomaly_detection": ("6. Anomaly detection", "python examples/anomaly_detection.py"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/examples"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--intro", type=Path, default=Path(__file__).with_name("results_intro.md"))
    args = p.parse_args()
    parts = [args.intro.read_text().rstrip() + "\n"]
    for name, (title, command) in SECTIONS.items():
        path = args.runs / name / "results.json"
        if not path.is_file():
            continue
        record = json.loads(path.read_text())
        if record["quick"]:
            raise SystemExit(f"{path} comes from a --quick run; run the example in full first")
        res = record["results"]
        parts.append(
            f"## {title}\n\n`{command}` — {record['epochs']} epochs, {record['wall_seconds'] / 60:.1f} min "
            f"on {record['device']}, torch {record['torch']}.\n"
        )
        notes = args.intro.with_name(f"results_{name}.md")
        if notes.is_file():
            parts.append(notes.read_text().rstrip() + "\n")
        if name == "mlp_vae":
            rows = [{"test −ELBO (1 sample)": res["test_neg_elbo"], "KL": res["test_kl"],
                     f"IW-NLL (K={res['iw_samples']})": res["test_iw_nll"]}]  # fmt: skip
        elif name == "latent_manifold":
            rows = [{"latent": k, **v} for k, v in res.items()]
        else:
            rows = res["rows"]
        columns = list(dict.fromkeys(c for r in rows for c in r))
        parts.append(table(rows, columns) + "\n")
        img = args.docs / "img" / name
        img.mkdir(parents=True, exist_ok=True)
        figures = sorted((args.runs / name).glob("*.png"))
        for fig in figures:
            shutil.copy(fig, img / fig.name)
        parts.append("\n".join(f"![{fig.stem}](img/{name}/{fig.name})" for fig in figures) + "\n")
    (args.docs / "results.md").write_text("\n".join(parts))
    print(f"wrote {args.docs / 'results.md'}")


if __name__ == "__main__":
    main()
