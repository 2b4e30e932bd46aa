"""Fixtures shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bert_no_dropout(tiny_bert, tmp_path_factory) -> Path:
    """The tiny BERT, same weights, with dropout off: 1 and 2 processes draw no different random masks, and
    a short run can learn titles (with dropout 0.1 the random [CLS] vectors' differences drown)."""
    from transformers import AutoTokenizer, BertModel

    out = tmp_path_factory.mktemp("tiny-bert-nodrop")
    BertModel.from_pretrained(tiny_bert, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_bert).save_pretrained(out)
    return out
