"""
Text embeddings of a vocabulary from the CLIP text encoder, with prompt ensembling:

    t_c = normalize( mean over templates k and names s of c of
                     normalize( T(template_k(s)) ) )

(one name per class unless synonyms are given: the mean runs over every template x
synonym pair). ``VILD_TEMPLATES`` are the 63 prompt templates of ViLD's release;
``{article}`` becomes "a" or "an".
"""

from typing import List, Optional, Sequence

import clip
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .core import VocabularyError

__all__ = [
    "VILD_TEMPLATES",
    "SINGLE_TEMPLATE",
    "fill_template",
    "encode_vocabulary",
    "check_class_names",
]

VILD_TEMPLATES = [
    "There is {article} {} in the scene.",
    "There is the {} in the scene.",
    "a photo of {article} {} in the scene.",
    "a photo of the {} in the scene.",
    "a photo of one {} in the scene.",
    "itap of {article} {}.",
    "itap of my {}.",
    "itap of the {}.",
    "a photo of {article} {}.",
    "a photo of my {}.",
    "a photo of the {}.",
    "a photo of one {}.",
    "a photo of many {}.",
    "a good photo of {article} {}.",
    "a good photo of the {}.",
    "a bad photo of {article} {}.",
    "a bad photo of the {}.",
    "a photo of a nice {}.",
    "a photo of the nice {}.",
    "a photo of a cool {}.",
    "a photo of the cool {}.",
    "a photo of a weird {}.",
    "a photo of the weird {}.",
    "a photo of a small {}.",
    "a photo of the small {}.",
    "a photo of a large {}.",
    "a photo of the large {}.",
    "a photo of a clean {}.",
    "a photo of the clean {}.",
    "a photo of a dirty {}.",
    "a photo of the dirty {}.",
    "a bright photo of {article} {}.",
    "a bright photo of the {}.",
    "a dark photo of {article} {}.",
    "a dark photo of the {}.",
    "a photo of a hard to see {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of {article} {}.",
    "a low resolution photo of the {}.",
    "a cropped photo of {article} {}.",
    "a cropped photo of the {}.",
    "a close-up photo of {article} {}.",
    "a close-up photo of the {}.",
    "a jpeg corrupted photo of {article} {}.",
    "a jpeg corrupted photo of the {}.",
    "a blurry photo of {article} {}.",
    "a blurry photo of the {}.",
    "a pixelated photo of {article} {}.",
    "a pixelated photo of the {}.",
    "a black and white photo of the {}.",
    "a black and white photo of {article} {}.",
    "a plastic {}.",
    "the plastic {}.",
    "a toy {}.",
    "the toy {}.",
    "a plushie {}.",
    "the plushie {}.",
    "a cartoon {}.",
    "the cartoon {}.",
    "an embroidered {}.",
    "the embroidered {}.",
    "a painting of the {}.",
    "a painting of a {}.",
]
assert len(VILD_TEMPLATES) == 63
SINGLE_TEMPLATE = ["a photo of {article} {}."]


def fill_template(template: str, name: str) -> str:
    """``template`` with ``{}`` = name and ``{article}`` = "a"/"an" for that name."""
    article = "an" if name[:1].lower() in "aeiou" else "a"
    return template.replace("{article}", article).replace("{}", name)


def check_class_names(names: Sequence[str], source: str = "the vocabulary") -> List[str]:
    """Names with '_' as spaces; VocabularyError if empty, blank or duplicated."""
    if len(names) == 0:
        raise VocabularyError(f"{source} is empty: give at least one class name")
    cleaned = [str(n).replace("_", " ").strip() for n in names]
    seen = {}
    for i, n in enumerate(cleaned):
        if not n:
            raise VocabularyError(f"{source}: class {i} has an empty name")
        if n.lower() in seen:
            raise VocabularyError(
                f"{source}: classes {seen[n.lower()]} and {i} have the same name {n!r} "
                "(their text embeddings would be identical)"
            )
        seen[n.lower()] = i
    return cleaned


def _too_long(names: Sequence[str], per_class, context_length: int) -> str:
    """Which names have a prompt longer than the text encoder's context, as one line."""
    from clip.clip import _tokenizer  # the tokenizer clip.tokenize uses

    longest = [max(len(_tokenizer.encode(p)) + 2 for p in prompts) for prompts in per_class]
    cut = [(n, k) for n, k in zip(names, longest) if k > context_length]
    shown = ", ".join(f"{n!r} ({k} tokens)" for n, k in cut[:5])
    more = f" and {len(cut) - 5} more" if len(cut) > 5 else ""
    return (
        f"{len(cut)} class names are too long for the text encoder's context of"
        f" {context_length} tokens with ViLD's prompts: {shown}{more}; the encoder would cut"
        " them (and two names cut alike would get one embedding): shorten them"
    )


PROGRESS_FROM_PROMPTS = 4096  # encode_vocabulary shows progress beyond this many prompts


@torch.no_grad()
def encode_vocabulary(
    model,
    class_names: Sequence[str],
    templates: Sequence[str] = tuple(VILD_TEMPLATES),
    synonyms: Optional[Sequence[Sequence[str]]] = None,
    batch_size: int = 256,
    progress: Optional[bool] = None,
) -> torch.Tensor:
    """
    Args:
        model: a CLIP model (``clip.model.CLIP``); its device, dtype and context length
            (77 for OpenAI's models) are used.
        class_names: C names; "_" is read as a space.
        templates: prompt templates with ``{}`` (and optionally ``{article}``).
        synonyms: optional, per class a list of names averaged together with the class
            name (e.g. LVIS ``synonyms``); duplicates are ignored.
        batch_size: prompts per text-encoder call.
        progress: a progress bar over the batches; None: when there are more than
            ``PROGRESS_FROM_PROMPTS`` prompts (about 65 names with ViLD's 63 templates).

    Returns:
        [C, D] float32 tensor on the CPU, rows unit-norm, in ``class_names`` order.
    """
    names = check_class_names(class_names)
    if not templates:
        raise VocabularyError("no prompt templates given")
    per_class = []
    for i, name in enumerate(names):
        variants = [name]
        if synonyms is not None:
            for s in synonyms[i]:
                s = str(s).replace("_", " ").strip()
                if s and s not in variants:
                    variants.append(s)
        per_class.append([fill_template(t, v) for v in variants for t in templates])
    prompts = [p for ps in per_class for p in ps]
    device = next(model.parameters()).device
    if progress is None:
        progress = len(prompts) > PROGRESS_FROM_PROMPTS
    chunks = []
    for start in tqdm(
        range(0, len(prompts), batch_size), desc="text prompts", unit="batch", disable=not progress
    ):
        try:  # never truncate: two long names cut alike would get one embedding
            tokens = clip.tokenize(
                prompts[start : start + batch_size], context_length=model.context_length
            ).to(device)
        except RuntimeError:  # clip's "Input ... is too long for context length N"
            raise VocabularyError(_too_long(names, per_class, model.context_length)) from None
        chunks.append(F.normalize(model.encode_text(tokens).float(), dim=-1).cpu())
    per_prompt = torch.cat(chunks)
    out, start = [], 0
    for ps in per_class:
        out.append(per_prompt[start : start + len(ps)].mean(dim=0))
        start += len(ps)
    return F.normalize(torch.stack(out), dim=-1)
