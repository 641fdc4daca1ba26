import os
import sys

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(__file__))

import tiny  # noqa: E402
import torch  # noqa: E402

# Tiny models gain nothing from intra-op threads, and spinning OpenMP workers oversubscribe a 2-core machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """A saved tiny model (with tokenizer) per family, 6+6 layers (6 for decoder-only)."""
    root = tmp_path_factory.mktemp("models")
    return {fam: tiny.save_tiny(fam, str(root / fam)) for fam in tiny.FAMILIES}


@pytest.fixture(scope="session")
def banks(model_dirs, tmp_path_factory):
    """A bank per family with modules of span 2 and 3 at every start (copy-initialised)."""
    from modsearch import LayerBank

    root = tmp_path_factory.mktemp("banks")
    return {fam: LayerBank.init(d, str(root / fam), granularities=[2, 3], starts="all")
            for fam, d in model_dirs.items()}
