"""A run rebuilds its model from the run directory alone, whatever articles file a later command reads."""

from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest
import torch

from mtnews.cli import main
from mtnews.errors import CheckpointError
from mtnews.model.run import ARTICLES, RUN_JSON, TOKENIZER, load_run, upgrade_run


def _scores(run_dir, data):
    """Per-candidate scores of validation, keyed by (impression_id, article_id), through the Python API."""
    from mtnews.recommender import Recommender

    rec = Recommender.from_run(run_dir, data, "validation", device="cpu")
    behaviors = pl.read_parquet(data / "validation" / "behaviors.parquet")
    scored = rec.score(behaviors).select("impression_id", pl.col("article_ids_inview").list.drop_nulls(), "scores")
    flat = scored.explode("article_ids_inview", "scores")
    return dict(zip(zip(flat["impression_id"].to_list(), flat["article_ids_inview"].to_list()), flat["scores"].to_list()))


def _altered_copy(src, dst):
    """The dataset with its articles file reordered, one category gone, a new category and new entity groups,
    and a new article shown in the first validation impression."""
    shutil.copytree(src, dst)
    a = pl.read_parquet(dst / "articles.parquet")
    first_cat = a["category_str"].drop_nulls().unique().sort()[0]
    new_id = int(a["article_id"].max()) + 1
    extra = a.head(2).with_columns(
        pl.Series("article_id", [new_id, new_id + 1], dtype=a["article_id"].dtype),
        pl.lit("Brand new section opens downtown").alias("title"),
        pl.lit("nyhedsbrev").alias("category_str"),
        pl.lit(["NEWGROUP", "ANOTHER"]).cast(a["entity_groups"].dtype).alias("entity_groups"),
    )
    altered = (pl.concat([a, extra])
               .with_columns(pl.when(pl.col("category_str") == first_cat).then(None)
                             .otherwise(pl.col("category_str")).alias("category_str"))
               .sample(fraction=1.0, shuffle=True, seed=1))
    altered.write_parquet(dst / "articles.parquet")
    b = pl.read_parquet(dst / "validation" / "behaviors.parquet")
    b = b.with_columns(pl.when(pl.int_range(pl.len()) == 0)
                       .then(pl.col("article_ids_inview").list.concat(pl.lit([new_id], dtype=b["article_ids_inview"].dtype)))
                       .otherwise(pl.col("article_ids_inview")).alias("article_ids_inview"))
    b.write_parquet(dst / "validation" / "behaviors.parquet")
    return new_id, first_cat


def test_run_directory_records_what_rebuilds_the_model(trained_run, small_synth):
    spec = json.loads((trained_run / RUN_JSON).read_text())
    articles = pl.read_parquet(small_synth / "articles.parquet")
    cats = sorted(articles["category_str"].drop_nulls().unique().to_list())
    assert spec["format"] == 1 and spec["vocab"]["categories"] == cats
    assert spec["heads"] == {"category": len(cats), "sentiment": 3, "ner": len(spec["vocab"]["entity_groups"]),
                             "subcategory": 0}
    assert spec["vocab"]["subcategories"] == []  # EBNeRD has no subcategory names
    assert spec["heads"]["ner"] > 0 and len(spec["backbone_sha256"]) == 64
    assert (trained_run / TOKENIZER / "tokenizer_config.json").is_file()
    copy = pl.read_parquet(trained_run / ARTICLES)
    assert copy.columns == ["article_id", "title", "category_str", "published_time"]
    assert copy.select("article_id", "title", "category_str").equals(articles.select("article_id", "title", "category_str"))
    assert copy["published_time"].equals(articles["published_time"].cast(copy["published_time"].dtype))


def test_a_dataset_with_other_articles_scores_and_shared_articles_keep_their_scores(trained_run, small_synth, tmp_path,
                                                                                   capsys):
    copy = tmp_path / "copy"
    new_id, _ = _altered_copy(small_synth, copy)
    # The reproduction: this used to fail with "tensor 'category_head.weight' has shape (15, 32), expected (16, 32)".
    assert main(["evaluate", "--run", str(trained_run), "--data", str(copy), "--split", "validation",
                 "--json-out", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["impressions"] > 0
    before, after = _scores(trained_run, small_synth), _scores(trained_run, copy)
    shared = set(before) & set(after)
    assert len(shared) == len(before) and len(after) == len(before) + 1
    np.testing.assert_allclose([after[k] for k in sorted(shared)], [before[k] for k in sorted(shared)], rtol=1e-6)
    assert any(aid == new_id for _, aid in after)


def test_dataset_labels_map_onto_the_runs_heads(trained_run, small_synth, tmp_path):
    copy = tmp_path / "copy"
    _, gone = _altered_copy(small_synth, copy)
    run = load_run(trained_run)
    table = run.load_dataset_articles(copy / "articles.parquet")
    assert table.category_names == list(run.spec.vocab.categories)  # the run's head order, not the file's
    assert table.entity_names == list(run.spec.vocab.entity_groups)  # NEWGROUP is not a head output
    ids = pl.read_parquet(copy / "articles.parquet")
    for aid, cat in zip(ids["article_id"].to_list()[:50], ids["category_str"].to_list()[:50]):
        idx = int(table.index(np.array([aid]))[0])
        want = run.spec.vocab.categories.index(cat) if cat in run.spec.vocab.categories else -100
        assert table.category[idx] == want
    assert gone in run.spec.vocab.categories  # a category the file lacks keeps its head output


def test_a_run_loads_without_any_dataset(trained_run):
    run = load_run(trained_run)
    assert not run.model.training and run.history_size == 12
    assert run.model.category_head.out_features == run.spec.heads["category"]
    assert run.model.ner_head.out_features == run.spec.heads["ner"]
    assert len(run.articles) - 2 == pl.read_parquet(trained_run / ARTICLES).height


def test_a_format_1_run_json_from_before_the_subcategory_task_still_loads(trained_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    spec = json.loads((old / RUN_JSON).read_text())
    del spec["heads"]["subcategory"], spec["vocab"]["subcategories"]
    (old / RUN_JSON).write_text(json.dumps(spec, indent=2))
    config = (old / "config.yaml").read_text()
    assert "  subcategory: 0.0\n" in config
    (old / "config.yaml").write_text(config.replace("  subcategory: 0.0\n", ""))
    run = load_run(old)
    assert run.spec.heads["subcategory"] == 0 and run.spec.vocab.subcategories == ()
    assert run.model.subcategory_head is None
    same = load_run(trained_run).model.state_dict()
    assert all(torch.equal(t, same[k]) for k, t in run.model.state_dict().items())


def test_a_run_without_run_json_names_the_upgrade_and_upgrade_restores_it(trained_run, small_synth, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    for p in (old / RUN_JSON, old / ARTICLES):
        p.unlink()
    shutil.rmtree(old / TOKENIZER)
    assert main(["evaluate", "--run", str(old), "--data", str(small_synth)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mtnews run upgrade" in err[0] and "Traceback" not in err[0]
    assert main(["run", "upgrade", "--run", str(old), "--data", str(small_synth)]) == 0
    assert json.loads((old / RUN_JSON).read_text()) == json.loads((trained_run / RUN_JSON).read_text())
    assert _scores(old, small_synth) == _scores(trained_run, small_synth)
    with pytest.raises(CheckpointError, match="nothing to upgrade"):
        upgrade_run(old, small_synth)


def test_upgrade_with_another_dataset_is_refused(trained_run, tiny_dataset, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(trained_run, old)
    (old / RUN_JSON).unlink()
    with pytest.raises(CheckpointError, match="shape|do not match"):
        upgrade_run(old, tiny_dataset())
    assert not (old / RUN_JSON).exists()


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "final" / "model.safetensors").write_bytes(b"\0" * 10), "corrupt or unreadable"),
    (lambda run: (run / RUN_JSON).write_text("{not json"), "unreadable run description"),
    (lambda run: (run / RUN_JSON).write_text(
        (run / RUN_JSON).read_text().replace('"backbone_sha256": "', '"backbone_sha256": "0')), "sha256"),
    (lambda run: shutil.rmtree(run / TOKENIZER), "tokenizer"),
])
def test_a_damaged_run_is_one_clear_error(trained_run, small_synth, tmp_path, capsys, damage, message):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.rmtree(run / "best", ignore_errors=True)
    damage(run)
    assert main(["evaluate", "--run", str(run), "--data", str(small_synth), "--json-out", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(run) in err[0]
    assert not (tmp_path / "m.json").exists()


def test_weights_of_another_model_are_refused(trained_run, tiny_bert, small_synth, tmp_path, capsys):
    from mtnews.config import load_config
    from mtnews.model.build import build_model, save_weights

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.rmtree(run / "best", ignore_errors=True)
    other_cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--model.lora.enabled", "false"])
    other, _ = build_model(other_cfg, load_run(trained_run).spec.vocab)
    torch.manual_seed(0)
    save_weights(other, run / "final" / "model.safetensors")
    assert main(["evaluate", "--run", str(run), "--data", str(small_synth)]) == 2
    err = capsys.readouterr().err
    assert "do not match the model built from the run's config" in err and "Traceback" not in err
