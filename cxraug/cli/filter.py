"""``cxraug filter``: LNFS, drop noisy/atypical training images in latent space."""

from __future__ import annotations

from pathlib import Path

import typer

from cxraug.cli.common import (
    MAX_IMAGE_SIZE,
    DataOpt,
    DryRunOpt,
    KindOpt,
    SetOpt,
    check_number,
    console,
    out_dir_ok,
    table,
    writable_out,
)


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
               skip_bad: bool = typer.Option(
                   False, "--skip-bad", help="Skip missing, corrupt or oversized image files; "
                   "they are listed in OUT/skipped.csv and summary.json."),
               overwrite: bool = typer.Option(False, "--overwrite", help="Replace the outputs."),
               dry_run: bool = DryRunOpt) -> None:
    """Score every training image (the run's train split, or all images if the run has no
    splits.csv) and write a keep/drop list for `--set data.filter=OUT/keep.csv`."""
    writable_out(out)
    check_number("--image-size", image_size, 8, MAX_IMAGE_SIZE)
    from cxraug.core import config as C
    from cxraug.diffusion import lnfs
    from cxraug.diffusion.lnfs_config import FilterConfig

    cfg = C.load(FilterConfig, None, list(overrides or []))
    ds, what = _candidates(data, kind, model, skip_bad)
    if dry_run:
        console.print(C.dump(cfg) + f"# images: {what}")
        return
    out_dir_ok(out, overwrite)
    space = lnfs.open_latent_space(model, vae, image_size)
    console.print(f"LNFS on {what}; latents {space.latent_shape} at {space.image_size}px")
    candidates = ds
    latents, images, ds = lnfs.encode_dataset(ds, space, out / "cache", skip_bad=skip_bad)
    skipped = _skipped(candidates, ds)
    if skipped and len(ds) == 0:
        from cxraug.core.errors import DataError

        raise DataError(f"none of the {len(candidates)} images is readable (first: "
                        f"{skipped[0]['path']}: {skipped[0]['reason']})")
    with console.status("LNFS") as status:
        result = lnfs.run_lnfs(latents, cfg.lnfs, ids=ds.ids, paths=[str(p) for p in ds.paths],
                               status=lambda msg: status.update(f"LNFS {msg}"))
    C.save(cfg, out, "lnfs.yaml")
    files = result.save(out, labels=ds.labels, images=images)
    summary = result.summary(ds.labels)
    if skipped:
        files.update(_write_skipped(out, skipped, files["summary"]))
    cols = ["images", "dropped", "dropped_frac", "kmeans", "manifold", "discriminator"]
    rows = [[name, *[v[c] for c in cols]] for name, v in
            [("all", summary["overall"]), *summary["per_label"].items()]]
    console.print(table("LNFS removals by deciding stage, per positive label",
                        ["", "images", "dropped", "frac", "k-means", "manifold", "discr."], rows))
    console.print(f"[bold green]{summary['overall']['dropped']} of {len(ds)} dropped[/] -> "
                  + ", ".join(str(p) for p in files.values()))
    console.print(f"train on the rest with --set data.filter={files['csv']}")
    if skipped:
        console.print(f"[yellow]skipped {len(skipped)} unreadable image(s)[/] (--skip-bad), "
                      f"e.g. {skipped[0]['path']}: {skipped[0]['reason']} -> {files['skipped']}",
                      highlight=False)


def _candidates(data, kind: str, model, skip_bad: bool):
    """The images to filter (see :func:`cxraug.diffusion.lnfs.filter_candidates`); with
    ``--skip-bad`` listed files that do not exist are kept here and skipped with the other
    unreadable images, instead of refusing the dataset."""
    from cxraug.diffusion import lnfs

    return lnfs.filter_candidates(data, kind, model, missing="keep" if skip_bad else "error")


def _skipped(before, after) -> list[dict[str, str]]:
    """Rows of ``before`` the image cache left out, each with the reason its file is unreadable."""
    from cxraug.data.transforms import ImageReadError, load_grayscale

    kept = set(after.ids)
    out = []
    for ident, path in zip(before.ids, before.paths):
        if ident in kept:
            continue
        try:
            load_grayscale(path)
            reason = "unreadable when cached"
        except ImageReadError as e:
            reason = str(e).removeprefix(f"{path}: ")
        out.append({"id": ident, "path": str(path), "reason": reason})
    return out


def _write_skipped(out: Path, skipped: list[dict[str, str]], summary: Path) -> dict[str, Path]:
    """``OUT/skipped.csv`` (id, path, reason) and a ``skipped`` list in ``summary.json``."""
    import csv
    import json

    path = out / "skipped.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["id", "path", "reason"])
        w.writeheader()
        w.writerows(skipped)
    data = json.loads(summary.read_text())
    data["skipped"] = skipped
    summary.write_text(json.dumps(data, indent=2) + "\n")
    return {"skipped": path}


def register(app: typer.Typer) -> None:
    app.command("filter")(filter_cmd)
