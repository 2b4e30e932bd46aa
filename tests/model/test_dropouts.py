"""`model.encoder_dropout` (every encoder dropout takes the configured probability) and `model.news_dropout`
(dropout on the [CLS] vector before the projection, in training only)."""

import pytest
import torch

from mtnews.config import load_config
from mtnews.data.articles import load_articles
from mtnews.data.layout import split_paths
from mtnews.errors import ConfigError
from mtnews.model.build import build_model
from mtnews.model.tokens import tokenize_titles


def _model(root, tiny_bert, *extra):
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--model.lora.enabled", "false",
                             "--model.max_title_length", "16", *extra])
    articles = load_articles(split_paths(root, "train").articles)
    torch.manual_seed(0)
    model, tok = build_model(cfg, articles.vocab)
    tokens = tokenize_titles(articles.titles, tok, 16)
    return model, tokens


def _two_train_passes(model, tokens):
    model.train()
    import numpy as np

    ids, mask = tokens.batch(np.arange(1, 5))
    with torch.no_grad():
        return model.encode_news(ids, mask), model.encode_news(ids, mask)


def test_zero_dropout_makes_training_mode_deterministic(tiny_dataset, tiny_bert):
    root = tiny_dataset()
    model, tokens = _model(root, tiny_bert)
    a, b = _two_train_passes(model, tokens)
    assert not torch.allclose(a, b), "the tiny BERT's checkpoint dropout (0.1) should make train passes differ"
    model, tokens = _model(root, tiny_bert, "--model.encoder_dropout", "0")
    a, b = _two_train_passes(model, tokens)
    assert torch.equal(a, b)
    ps = {m.p for m in model.backbone().modules() if isinstance(m, torch.nn.Dropout)}
    assert ps == {0.0}


@pytest.mark.parametrize("key", ["model.encoder_dropout", "model.news_dropout"])
@pytest.mark.parametrize("bad", ["1", "-0.1"])
def test_out_of_range_dropout_is_refused(key, bad):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [f"--{key}", bad])


def test_news_dropout_drops_cls_entries_in_training_only(tiny_dataset, tiny_bert):
    root = tiny_dataset()
    model, tokens = _model(root, tiny_bert, "--model.encoder_dropout", "0", "--model.news_dropout", "0.5",
                           "--model.projection", "true")
    import numpy as np

    ids, mask = tokens.batch(np.arange(1, 5))
    with torch.no_grad():
        cls = model.backbone()(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        model.eval()
        assert torch.equal(model.encode_news(ids, mask), model.projection(cls))  # no dropout at inference
        model.train()
        torch.manual_seed(1)
        dropped = model.encode_news(ids, mask)
        torch.manual_seed(1)
        keep = torch.nn.functional.dropout(torch.ones_like(cls), 0.5)  # the same draw: 0 or 1 / (1 - p)
    assert 0.2 < (keep == 0).float().mean() < 0.8
    torch.testing.assert_close(dropped, model.projection(cls * keep))
