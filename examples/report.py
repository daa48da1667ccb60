"""Assemble docs/results.md from the examples' results.json files and copy their figures into docs/img/.

    python examples/report.py [--runs runs/examples] [--docs docs] [--benchmarks benchmarks/results]

Only full runs are used (a results.json written with --quick is refused). The objectives section
comes from ``benchmarks/results/objectives.json`` and ``gradient_snr.json``
(``benchmarks/objectives.py`` and ``benchmarks/gradient_snr.py``).
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


#: Test NLL published by Burda et al. (2015, table 1) for one stochastic layer on MNIST, IW bound
#: with K = 5000, after 3,280 passes over the data: by training objective and k.
PUBLISHED_NLL = {("elbo", 1): 86.76, ("iwae", 5): 85.54, ("iwae", 50): 84.78}


def objectives_section(bench: Path) -> str | None:
    """The "Objectives" section of results.md from the two benchmark records, or None without them."""
    path = bench / "objectives.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    rows = []
    for name, row in record["rows"].items():
        published = PUBLISHED_NLL.get((name, row["k"]))
        rows.append(
            {
                "objective": row["objective"],
                "epochs": row["epochs"],
                f"test NLL (K={record['iw_samples']})": f"{row['test_nll']:.2f} ± {row['standard_error']:.2f}",
                "published (3,280 epochs)": "" if published is None else f"{published:.2f}",
                "train min": f"{row['train_seconds'] / 60:.1f}",
            }
        )
    parts = [
        "## Objectives\n",
        f"`{record['command']}` — {record['network']}; {record['data']}; {record['optimizer']}; "
        f"{record['machine']}. Estimator: {record['estimator']}. The published figures are Burda et al. "
        "(2015, table 1), trained some eighty times longer; DReG has no published row for this network. "
        "Train minutes are wall time with other work sharing the two cores.\n",
        table(rows, list(rows[0])) + "\n",
    ]
    for snr_path in (bench / "gradient_snr.json", bench / "gradient_snr_toy.json"):
        if not snr_path.is_file():
            continue
        snr = json.loads(snr_path.read_text())
        snr_rows = [
            {
                "objective": r["objective"],
                "k": r["k"],
                "encoder SNR (mean)": f"{r['encoder_snr_mean']:.3f}",
                "encoder SNR (median)": f"{r['encoder_snr_median']:.3f}",
                "decoder SNR (mean)": f"{r['decoder_snr_mean']:.3f}",
            }
            for r in snr["rows"]
        ]
        parts += [
            f"Gradient signal-to-noise ratio, `{snr['command']}`: {snr['definition']}; {snr['model']}; "
            f"{snr['batch']}, {snr['draws']} draws.\n",
            table(snr_rows, list(snr_rows[0])) + "\n",
        ]
    return "\n".join(parts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/examples"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--intro", type=Path, default=Path(__file__).with_name("results_intro.md"))
    p.add_argument("--benchmarks", type=Path, default=Path("benchmarks/results"))
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
    objectives = objectives_section(args.benchmarks)
    if objectives is not None:
        parts.append(objectives)
    (args.docs / "results.md").write_text("\n".join(parts))
    print(f"wrote {args.docs / 'results.md'}")


if __name__ == "__main__":
    main()
