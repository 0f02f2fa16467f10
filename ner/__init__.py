"""NER fine-tuning for BERT-family encoders on CoNLL-style files.

``import ner`` registers the model type ``ner_bert`` with transformers' Auto classes (``AutoConfig``,
``AutoModelForTokenClassification``, ``pipeline()``), so that a saved MLP model loads there. (Output folders need
not this package: a CRF, constrained or MLP folder carries its own code for ``trust_remote_code=True``, and a
single linear head, CRF or not, reads as stock BERT; see ``ner.modeling``.) It does so without importing transformers and torch itself, so that light modules such as
``ner.schemes`` stay quick to import: ``ner.configuration``, which registers the config, is imported as soon as
transformers has imported its ``AutoConfig`` module and finished the import that asked for it (midway, the
modules ``ner.configuration`` needs may be half-built); the config's first use brings in ``ner.modeling``,
which registers the model.
"""

import importlib
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

_AUTO_CONFIG = "transformers.models.auto.configuration_auto"
_REGISTRATION = f"{__name__}.configuration"
_importing: list[str] = []  # the transformers modules being imported now, outermost first


# The finder and loader below follow importlib's protocols without importlib.abc, which costs more to import
# (importlib.resources, pathlib) than the rest of ``import ner``.
class _ThenRegister:
    """Runs a transformers module with its own loader; registers ``ner_bert`` after the outermost one that
    leaves ``AutoConfig`` imported."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = module.__spec__.loader = self.loader  # the module keeps no trace of this one
        _importing.append(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            _importing.pop()
        if not _importing and _AUTO_CONFIG in sys.modules and _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
            importlib.import_module(_REGISTRATION)


class _WhileTransformersImports:
    """Finds transformers' modules as the finders after it do, with ``_ThenRegister`` as their loader."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name != "transformers" and not name.startswith("transformers."):
            return None
        for finder in sys.meta_path:
            spec = finder.find_spec(name, path, target) if finder is not self and hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenRegister(spec.loader)
                return spec
        return None


_FINDER = _WhileTransformersImports()
if _AUTO_CONFIG in sys.modules:
    importlib.import_module(_REGISTRATION)
else:
    sys.meta_path.insert(0, _FINDER)
