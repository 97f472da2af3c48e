"""``cxraug filter``: LNFS, drop noisy/atypical training images in latent space."""

from __future__ import annotations

from pathlib import Path

import typer

from cxraug.cli.common import DataOpt, DryRunOpt, KindOpt, SetOpt, console, out_dir_ok, table


def filter_cmd(data: str | None = DataOpt, kind: str = KindOpt,
               model: Path | None = typer.Option(
                   None, "--model", "-m", help="Run folder: its vae/ and splits.csv."),
               vae: Path | None = typer.Option(
                   None, "--vae", help="Latent-space folder (instead of RUN/vae)."),
               out: Path = typer.Option(
                   ..., "--out", "-o", help="Output folder: keep.csv, summary.json, dropped.png."),
               overrides: list[str] | None = SetOpt,
               image_size: int | None = typer.Option(
                   None, "--image-size", help="Encode at this size (default: the latent space's)."),
               skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable files."),
               overwrite: bool = typer.Option(False, "--overwrite", help="Replace the outputs."),
               dry_run: bool = DryRunOpt) -> None:
    """Score every training image (the run's train split, or all images if the run has no
    splits.csv) and write a keep/drop list for `--set data.filter=OUT/keep.csv`."""
    from cxraug import config as C
    from cxraug.diffusion import lnfs

    cfg = C.load(lnfs.FilterConfig, None, list(overrides or []))
    ds, what = lnfs.filter_candidates(data, kind, model)
    if dry_run:
        console.print(C.dump(cfg) + f"# images: {what}")
        return
    out_dir_ok(out, overwrite)
    space = lnfs.open_latent_space(model, vae, image_size)
    console.print(f"LNFS on {what}; latents {space.latent_shape} at {space.image_size}px")
    latents, images, ds = lnfs.encode_dataset(ds, space, out / "cache", skip_bad=skip_bad)
    with console.status("LNFS") as status:
        result = lnfs.run_lnfs(latents, cfg.lnfs, ids=ds.ids, paths=[str(p) for p in ds.paths],
                               status=lambda msg: status.update(f"LNFS {msg}"))
    C.save(cfg, out, "lnfs.yaml")
    files = result.save(out, labels=ds.labels, images=images)
    summary = result.summary(ds.labels)
    cols = ["images", "dropped", "dropped_frac", "kmeans", "manifold", "discriminator"]
    rows = [[name, *[v[c] for c in cols]] for name, v in
            [("all", summary["overall"]), *summary["per_label"].items()]]
    console.print(table("LNFS removals by deciding stage, per positive label",
                        ["", "images", "dropped", "frac", "k-means", "manifold", "discr."], rows))
    console.print(f"[bold green]{summary['overall']['dropped']} of {len(ds)} dropped[/] -> "
                  + ", ".join(str(p) for p in files.values()))
    console.print(f"train on the rest with --set data.filter={files['csv']}")


def register(app: typer.Typer) -> None:
    app.command("filter")(filter_cmd)
