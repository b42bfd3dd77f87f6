"""
Vocabularies, in one place: what a detector looks for (class names and their CLIP text
embeddings) from every source.

    core              Vocabulary, VocabularyError; a registered dataset's vocabulary
    prompts           ViLD's prompt ensemble: names -> unit-norm text embeddings (CLIP)
    embedding_files   text-embedding files (.npy + .json record), checked; the config's
                      training and test vocabularies
    user              your words, a file or a dataset, embedded by a teacher; noun x
                      attribute expansion

The classifier that scores regions against a vocabulary is a model part:
:class:`vild_d2.modeling.ZeroShotClassifier`.
"""

from .core import Vocabulary, VocabularyError, dataset_vocabulary

__all__ = ["Vocabulary", "VocabularyError", "dataset_vocabulary"]
