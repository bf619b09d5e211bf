"""Causal language modelling: the built-in token corpus, its windows and the small GPT.

`corpus` builds and caches the "python-stdlib" byte-level token file and its fixed split;
`windows` turns a split into memory-mapped next-token samples for a DataLoader; `gpt` owns the
"gpt" model, its loss and its validation score. The training loop lives elsewhere.
"""

from crescendo_trainer.text.corpus import (
    CORPUS_NAME,
    VAL_FRACTION,
    VOCAB_SIZE,
    TokenCorpus,
    list_sources,
    load_python_stdlib,
    write_token_file,
)
from crescendo_trainer.text.gpt import (
    Gpt,
    GptConfig,
    build_gpt,
    evaluate_lm,
    lm_loss,
    lm_loss_sums,
)
from crescendo_trainer.text.windows import TokenWindows, identity_collate

__all__ = [
    "CORPUS_NAME",
    "VAL_FRACTION",
    "VOCAB_SIZE",
    "Gpt",
    "GptConfig",
    "TokenCorpus",
    "TokenWindows",
    "build_gpt",
    "evaluate_lm",
    "identity_collate",
    "list_sources",
    "lm_loss",
    "lm_loss_sums",
    "load_python_stdlib",
    "write_token_file",
]
