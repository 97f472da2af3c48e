"""Every measured number the README and docs/ quote is the committed JSON's (or the shipped model's
own config): a rerun that changes a result file fails here until the page says the new number."""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
MODEL = REPO / "cxraug" / "assets" / "models" / "kermany-128"


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def page(name: str) -> str:
    return " ".join((REPO / name).read_text().split())  # line breaks do not matter


def scale(name: str, g: float) -> dict:
    return next(s for s in load(name)["scales"] if s["guidance"] == g)


def quoted(text: str, template: str, *values) -> None:
    expected = template.format(*values)
    assert expected in text, f"expected {expected!r} (from the JSON)"


def test_readme_quotes_the_shipped_models_quality_card():
    q = load("quality_kermany-128-dec.json")
    ev, floor, fid = q["eval"], q["eval"]["floor"], q["label_fidelity"]
    eq, feq = ev["synthetic_matched"]["equal_n"], floor["equal_n"]
    text = page("README.md")
    quoted(text, "| FID | {:.1f} | {:.1f} |", ev["metrics"]["fid"], floor["fid"])
    quoted(text, "| precision / recall | {:.3f} / {:.3f} | {:.3f} / {:.3f} |", ev["metrics"]["precision"],
           ev["metrics"]["recall"], floor["precision"], floor["recall"])
    quoted(text, "| coverage at equal n | {:.3f} | {:.3f} |", eq["coverage"], feq["coverage"])
    quoted(text, "| {:.3f} | {:.3f} |", ev["two_sample_auc"], floor["two_sample_auc"])
    quoted(text, "(judge on real test images: {:.3f}) | {:.3f} |",
           fid["judge_real_test_auc"]["Pneumonia"]["auc"], fid["pneumonia"]["stage1+adapter"]["auc"])
    c = q["cohort"]
    quoted(text, "| {} of {} rejected |", c["memorisation_fail"], c["n"])
    quoted(text, "`cxraug synth --labels pneumonia --n {}`", c["n"])
    quoted(text, "against {:,} real Kermany images", ev["counts"]["real"])


def test_readme_quotes_the_shipped_models_training():
    steps = json.loads((MODEL / "denoiser" / "config.json").read_text())["meta"]["steps"]
    adapter = json.loads((MODEL / "adapter" / "config.json").read_text())["meta"]["steps"]
    tune = json.loads((MODEL / "vae" / "cxraug_latent.json").read_text())["decoder_tune"]
    quoted(page("README.md"),
           "({:,} images; {:,} stage-1 steps, {:,} adapter steps, decoder tuned {:,} steps)",
           tune["train_images"], steps, adapter, tune["steps"])


def test_training_page_quotes_its_measurements():
    text = page("docs/training.md")
    macs = {r["model"]: r for r in load("macs.json")["rows"]}
    quoted(text, "U-ViT is {:.2f} GMACs", macs["paper U-ViT"]["thop_gmacs"])
    quoted(text, "U-ViT + DKIM adapter {:.3f} GMACs", macs["paper U-ViT + DiseaseAdapter"]["thop_gmacs"])
    quoted(text, "`cpu-192` is {:.3f} GMACs", macs["cpu-192 U-ViT"]["thop_gmacs"])
    r = load("recipe_v2_speed.json")
    quoted(text, "step {:.2f}x the f4 step", r["vae_f8_crops_over_f4_64"])
    quoted(text, "make a `cpu-192` step {:.2f}x faster", r["uvit_speedup_vs_77"]["16"])
    quoted(text, "was {:.0f}x slower than fp32", r["bf16_over_fp32_matmul"])
    before, after = scale("guidance_sweep.json", 2.0), scale("guidance_sweep_decoder.json", 2.0)
    quoted(text, "two-sample AUC fell from {:.3f} to {:.3f} and its FID from {:.1f} to {:.1f}",
           before["two_sample_auc"], after["two_sample_auc"], before["fid"], after["fid"])
    speed = load("speed.json")
    quoted(text, "batch {} ran at {:.1f} % of the measured fp32 matmul peak", speed["denoiser"]["batch"],
           100 * speed["denoiser"]["fraction_of_peak"])
    quoted(text, "at {:.2f}x the images/s", speed["classifier"]["pipeline_over_in_memory"])
    v = load("vae_recon.json")["vaes"]
    u, t = v["untuned"]["own_size"], v["tuned"]["own_size"]
    quoted(text, "PSNR {:.1f} -> {:.1f} dB, SSIM {:.3f} -> {:.3f} on {} test images",
           u["psnr_mean"], t["psnr_mean"], u["ssim_mean"], t["ssim_mean"], t["n"])


def test_cohorts_page_quotes_the_synth_speed():
    quoted(page("docs/cohorts.md"), "made {:.2f}x the images/s", load("synth_speed.json")["speedup"])


def test_evaluating_page_quotes_the_guidance_sweep_and_the_adapter_check():
    text = page("docs/evaluating.md")
    quoted(text, "(FID {:.1f} at guidance 1.0, {:.1f} at 3.0)", scale("guidance_sweep.json", 1.0)["fid"],
           scale("guidance_sweep.json", 3.0)["fid"])
    aucs = [s["two_sample_auc"] for s in load("guidance_sweep.json")["scales"]]
    quoted(text, "two-sample AUC at {:.2f}-{:.2f}", min(aucs), max(aucs))
    quoted(text, "VAE scored {:.3f}", load("guidance_sweep.json")["vae_ceiling"]["two_sample_auc"])
    for name, template in (("dkim_fidelity_kermany-c_neutral.json", "nothing by its hint alone ({:+.3f}"),
                           ("dkim_fidelity_kermany-c-rd_neutral.json", "AUC by {:+.3f}")):
        quoted(text, template, load(name)["labels"]["Pneumonia"]["difference"]["diff"])


def test_data_page_quotes_the_labeler_and_lnfs_checks():
    text = page("docs/data.md")
    iu = load("label_iu.json")
    quoted(text, "at least {} MeSH positives", iu["min_support_for_macro"])
    quoted(text, "macro-F1 {:.3f} for the rule labeler against {:.3f} for a naive",
           iu["results"]["rule"]["macro_f1"], iu["results"]["naive"]["macro_f1"])
    dev, final = load("lnfs_planted.json")["result"], load("lnfs_planted_final.json")["result"]
    quoted(text, "precision {:.2f}, recall {:.2f}, {:.1f} % of clean images dropped", dev["precision"],
           dev["recall"], 100 * dev["clean_drop_rate"])
    quoted(text, "precision {:.2f}, recall {:.2f}. It catches", final["precision"], final["recall"])
    per = dev["per_type"]
    assert all(per[t]["recall"] == 1.0 for t in ("inverted", "text_rectangles", "non_chest"))
    assert per["gaussian_noise"]["recall"] == 0.0  # "heavy Gaussian noise never"

