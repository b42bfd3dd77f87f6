"""
Where an inference vocabulary comes from: class names and their [C, D] text embeddings.

* a dataset's: ``lvis``, ``coco``, ``shapes_world`` (aliases below) or any registered
  dataset name, with the embedding file the aliases name or one given;
* a file: a ``.npy``/``.pt`` matrix with its names in a text file (one per line) or in
  the ``.json`` that ``tools/precompute_text_embeddings.py`` writes beside it;
* custom names embedded on the fly by a CLIP teacher with ViLD's 63 prompts;
* nouns x attributes (the paper's systematic expansion), both embedded by the teacher.
"""

import os
from typing import List, Optional, Sequence

import torch
from detectron2.data import DatasetCatalog

from ..teacher import load_clip
from .core import Vocabulary, VocabularyError, dataset_vocabulary, embeddings_provenance
from .embedding_files import check_text_embeddings, load_text_embeddings
from .prompts import VILD_TEMPLATES, check_class_names, encode_vocabulary

__all__ = [
    "Vocabulary",
    "BUILTIN_VOCABULARIES",
    "dataset_vocabulary_embeddings",
    "file_vocabulary",
    "custom_vocabulary",
    "expanded_vocabulary",
    "split_names",
]

# alias -> (dataset whose category names it uses, its default text-embedding file)
BUILTIN_VOCABULARIES = {
    "lvis": ("lvis_v1_val", "datasets/metadata/lvis_v1_clip_vild_prompts.npy"),
    "coco": ("coco_2017_val_ov", "datasets/metadata/coco_ov65_ViT-B-32.npy"),
    "shapes_world": ("shapes_world_val", "datasets/shapes_world/teacher/clip_world_text.npy"),
}


def split_names(text: str, what: str = "--custom-vocabulary") -> List[str]:
    """ "a,b , c" -> ["a", "b", "c"]; VocabularyError if empty, blank or duplicated."""
    names = [n.strip() for n in text.split(",")] if text.strip() else []
    return check_class_names(names, source=what)


def read_names_file(path: str) -> List[str]:
    """
    One class name per line, row k of the embeddings on line k + 1. Blank lines at the end
    are ignored; a blank line before a name is refused (skipping it would shift every later
    label by one while the count could still match).
    """
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    while lines and not lines[-1]:
        lines.pop()
    blank = [k + 1 for k, line in enumerate(lines) if not line]
    if blank:
        more = f" (and {len(blank) - 1} more)" if blank[1:] else ""
        raise VocabularyError(
            f"{path}: line {blank[0]} is blank{more}; each line names the embedding row of its"
            " number, so every line needs a name"
        )
    return lines


def _names_beside(path: str) -> Optional[List[str]]:
    names = embeddings_provenance(path).get("class_names")
    return list(names) if names is not None else None


def file_vocabulary(path: str, embed_dim: int, names_file: Optional[str] = None) -> Vocabulary:
    """A [C, D] file; names from ``names_file`` (one per line) or the ``.json`` beside it."""
    if names_file is not None:
        if not os.path.isfile(names_file):
            raise FileNotFoundError(f"vocabulary names file not found: {names_file}")
        names = check_class_names(read_names_file(names_file), source=names_file)
    else:
        names = _names_beside(path)
        if names is None:
            raise VocabularyError(
                f"{path}: no class names (give a names file, one name per line, or keep the .json"
                " that tools/precompute_text_embeddings.py writes beside the .npy)"
            )
    emb = load_text_embeddings(
        path,
        embed_dim=embed_dim,
        config_key="vocabulary file",
        num_rows=len(names),
        rows_of=names_file or "its names",
    )
    return Vocabulary(names=names, embeddings=emb, source=path)


def dataset_vocabulary_embeddings(
    name: str, embed_dim: int, embeddings_file: Optional[str] = None
) -> Vocabulary:
    """
    A dataset's vocabulary: ``name`` is an alias of :data:`BUILTIN_VOCABULARIES` or a
    registered dataset; the embeddings come from ``embeddings_file`` or the alias's file.
    Novel categories of the dataset (``novel_class_ids``) are marked non-base.
    """
    dataset, default_file = BUILTIN_VOCABULARIES.get(name, (name, None))
    path = embeddings_file or default_file
    if dataset not in DatasetCatalog.list():
        raise VocabularyError(
            f"vocabulary '{name}': no such builtin ({', '.join(BUILTIN_VOCABULARIES)}) "
            "or registered dataset"
        )
    if path is None:
        raise VocabularyError(
            f"vocabulary '{name}': give its text-embedding file (--vocabulary-file)"
        )
    names = _names_beside(path)
    vocab = dataset_vocabulary(dataset)
    if vocab is not None:
        names = vocab.names
    if names is None:
        raise VocabularyError(
            f"vocabulary '{name}': the categories of dataset '{dataset}' are unknown "
            f"(its annotation file is missing) and {path} has no names beside it"
        )
    emb = load_text_embeddings(
        path,
        embed_dim=embed_dim,
        config_key=f"vocabulary '{name}'",
        num_rows=len(names),
        rows_of=f"dataset '{dataset}'",
    )
    return Vocabulary(
        names=list(names),
        embeddings=emb,
        source=f"{name} ({path})",
        base_mask=vocab.base_mask if vocab is not None else None,
    )


def _encode(model, names: Sequence[str]) -> torch.Tensor:
    """[len(names), D] ViLD prompt-ensemble embeddings of ``names`` by a loaded CLIP."""
    return encode_vocabulary(model, names, VILD_TEMPLATES)


def custom_vocabulary(
    names_text: str, teacher: Optional[str], embed_dim: int, device: str = "cpu"
) -> Vocabulary:
    """Comma-separated names embedded by the CLIP ``teacher`` with ViLD's prompt ensemble."""
    names = split_names(names_text)
    if not teacher:
        raise VocabularyError(
            "--custom-vocabulary needs --teacher: the CLIP model (name or checkpoint) "
            "that embedded the model's training vocabulary"
        )
    model, _ = load_clip(teacher, device=device)
    emb = check_text_embeddings(
        _encode(model, names), name=f"teacher {teacher}", embed_dim=embed_dim
    )
    return Vocabulary(names=names, embeddings=emb, source=f"custom, embedded by {teacher}")


def expanded_vocabulary(
    nouns_text: str,
    attributes_text: str,
    teacher: Optional[str],
    embed_dim: int,
    device: str = "cpu",
    clip_model=None,
) -> Vocabulary:
    """
    The N * A pairs "attribute noun", scored p(noun | r) * p(attribute | r). ``clip_model``:
    the teacher already loaded (else it is loaded from ``teacher``, once).
    """
    nouns = split_names(nouns_text, what="--nouns")
    attributes = split_names(attributes_text, what="--attributes")
    if not teacher:
        raise VocabularyError(
            "--nouns/--attributes need --teacher: the CLIP model (name or checkpoint) "
            "that embedded the model's training vocabulary"
        )
    model = clip_model if clip_model is not None else load_clip(teacher, device=device)[0]
    noun_emb = check_text_embeddings(
        _encode(model, nouns), name=f"teacher {teacher}", embed_dim=embed_dim
    )
    attr_emb = check_text_embeddings(
        _encode(model, attributes), name=f"teacher {teacher}", embed_dim=embed_dim
    )
    return Vocabulary(
        names=[f"{a} {n}" for n in nouns for a in attributes],
        embeddings=noun_emb,
        attribute_embeddings=attr_emb,
        source=f"{len(nouns)} nouns x {len(attributes)} attributes, embedded by {teacher}",
    )
